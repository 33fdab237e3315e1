"""A short markdown digest of every analysis table, for the report and for a quick look."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from .io import atomic_path, read_parquet


def _read(paths: Iterable[str]) -> pd.DataFrame:
    frames = [read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _read_rejected(paths: Iterable[str]) -> pd.DataFrame:
    """The quarantine tables, with set and model from their paths (``<set>/rejected/<model>``)."""
    frames = []
    for path in paths:
        path = Path(path)
        df = read_parquet(path)
        if len(df):
            frames.append(df.assign(set=path.parent.parent.name, model=path.stem))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _display(models: Mapping[str, dict], name: str) -> str:
    spec = models.get(name, {})
    return spec.get("display", name)


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if pd.isna(value) else f"{value:.{digits}f}"


def _ci(row: pd.Series) -> str:
    if pd.isna(row.get("ci_low")) or pd.isna(row.get("ci_high")):
        return "—"
    return f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def _null(row: pd.Series) -> str:
    """The central 95% of a statistic's permutation null, when the table has it."""
    if pd.isna(row.get("null_low")) or pd.isna(row.get("null_high")):
        return "—"
    return f"[{row['null_low']:.3f}, {row['null_high']:.3f}]"


def _p(value, n_permutations: int | None = None) -> str:
    """A p value as a paper writes it: ``< .001`` below .001, ``≤ .010 (floor)`` at the
    smallest value a permutation test of ``n_permutations`` shuffles can give (1/(N+1)),
    else three decimals without the leading zero (``.049``)."""
    if value is None or pd.isna(value):
        return "—"
    value = float(value)
    if n_permutations:
        floor = 1.0 / (int(n_permutations) + 1)
        if floor >= 0.001 and value <= floor * (1 + 1e-9):
            return f"≤ {floor:.3f} (floor)".replace("0.", ".", 1)
    if value < 0.001:
        return "< .001"
    return f"{value:.3f}".replace("0.", ".", 1)


def _has_fdr(df: pd.DataFrame) -> bool:
    return "p_fdr" in df and df["p_fdr"].notna().any()


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def best_rows(df: pd.DataFrame, metric: str, by: list[str], chance: float | None = None
              ) -> pd.DataFrame:
    """For each group, the layer with the largest effect of ``metric``: the largest
    ``|value − chance|`` (an effect either way: an AUC of 0.2 is a stronger, reversed effect
    than one of 0.7), or the highest value when ``chance`` is None."""
    sub = df[(df["metric"] == metric) & df["value"].notna()]
    if sub.empty:
        return sub
    size = sub["value"] if chance is None else (sub["value"] - chance).abs()
    idx = size.groupby([sub[b] for b in by], dropna=False).idxmax()
    return sub.loc[idx.to_numpy()].sort_values(by)


def shared_space_layer(rows: pd.DataFrame) -> str:
    """``joint`` when the model has a projection into a shared space, else its deepest layer."""
    layers = rows.drop_duplicates("layer").sort_values("layer_index")["layer"].astype(str)
    return "joint" if "joint" in set(layers) else layers.iloc[-1]


def forms_section(df: pd.DataFrame, models: Mapping[str, dict]) -> list[str]:
    """Speech vs text vs cascade (avprobe.analysis.symbolism_forms): pooled voices only."""
    if df.empty:
        return []
    df = df[df["voice"].astype(str) == "all"]
    lines = ["## Speech vs text vs cascade (per-word ROC-AUC in each model's shared space)", "",
             "AUC over words (each word's score averaged over voices or templates); CIs resample words and "
             "anchor shapes (paired for differences). p tests the cross-modal claim: the shapes' labels are "
             "shuffled and the direction rebuilt, the same shuffles for every form (two-sided; for a "
             "difference: do the forms differ in their alignment with the shapes?). A CI away from 0 with a "
             "large p is a difference an untrained geometry gives with any direction.", ""]
    rows = [[_display(models, r["model"]), str(r.get("architecture", "")), str(r["space"]),
             r["form"] if r["metric"] == "auc_words" else f"{r['form']} − {r['form_b']}",
             _fmt(r["value"]), _ci(r), _p(r.get("p")), str(int(r["n"]))] for _, r in df.iterrows()]
    return lines + _markdown_table(["model", "architecture", "space", "form", "AUC / difference", "95% CI", "p",
                                    "words"], rows) + [""]


#: Said once, at the top: how to read p next to a CI.
READING_NOTE = (
    "How to read the tables: *p* is a one-sided permutation p-value (probe accuracy: a binomial "
    "test), **uncorrected**; *p (FDR)*, where a table has it, is Benjamini–Hochberg-adjusted across "
    "that analysis's layers (and directions, forms and voices for sound symbolism). "
    "The 95% CI is a bootstrap over items around the observed value. They are different "
    "procedures — the p tests against a shuffled null, the CI describes resampling "
    "variability — so near the threshold they can disagree (e.g. p = .049 with a CI that "
    "touches chance, or the reverse); neither is wrong. p below .001 is written `< .001`; a "
    "permutation p cannot fall below 1/(N+1) for N shuffles, written `≤ … (floor)` when the "
    "floor is at or above .001. *Best layer* is the layer with the largest effect either way: "
    "the largest |value − chance| (chance 0.5 for AUC, 0 for RSA), so a strong reversed effect "
    "is not hidden by a weak one in the expected direction; for probes, the highest accuracy "
    "(an accuracy below chance is not an effect)."
)


def summarize(
    tables: Mapping[str, Iterable[str]],
    models: Mapping[str, dict],
    out_path: str | os.PathLike,
    n_permutations: int | None = None,
) -> str:
    """Write a markdown digest: best layer per model for each analysis, with CI and p.

    ``n_permutations``: the permutation tests' N (``analysis.n_permutations``), so a p at the
    test's floor 1/(N+1) is written as that floor."""
    lines = ["# avprobe results summary", "", READING_NOTE, ""]
    kinds = sorted({spec.get("kind", "pretrained") for spec in models.values()})
    if "untrained" in kinds:
        lines += [
            "Models marked *(untrained)* are seeded random-initialisation controls, "
            "not pretrained networks.",
            "",
        ]

    sym = _read(tables.get("symbolism", []))
    lines += ["## Sound symbolism (ROC-AUC, round = 1; chance 0.5)", ""]
    if sym.empty:
        lines += ["No sound-symbolism analysis configured.", ""]
    else:
        lines += [
            "p tests the cross-modal claim: the anchors' labels (shapes for the geometric "
            "score, pseudowords for the phonetic one) are shuffled and the score direction "
            "rebuilt; *null 95%* is the range of AUCs that gives. The table's `p_item_label` "
            "(not shown) only tests that scores differ between classes along a fixed direction.",
            "",
        ]
        sym = sym[sym.get("voice", "all").astype(str) == "all"] if "voice" in sym else sym
        best = best_rows(sym, "auc", ["model", "form", "direction"], chance=0.5)
        fdr = _has_fdr(sym)
        rows = [
            [_display(models, r["model"]), str(r.get("form", "")), str(r.get("direction", "")),
             str(r["layer"]), _fmt(r["value"]) + (" (reversed)" if r["value"] < 0.5 else ""),
             _ci(r), _null(r), _p(r["p"], n_permutations)]
            + ([_p(r.get("p_fdr"), n_permutations)] if fdr else []) + [str(int(r["n"]))]
            for _, r in best.iterrows()
        ]
        lines += _markdown_table(
            ["model", "form", "direction", "best layer (max \\|AUC − 0.5\\|)", "AUC", "95% CI",
             "null 95%", "p"] + (["p (FDR)"] if fdr else []) + ["n"], rows
        ) + [""]

    lines += forms_section(_read(tables.get("symbolism_forms", [])), models)

    df = _read(tables.get("rsa", []))
    lines += ["## Layerwise RSA (best layer per model and reference)", ""]
    if df.empty:
        lines += ["No rows.", ""]
    else:
        if "partial" in df.columns:
            df = df[~df["partial"].fillna(False).astype(bool)]
        rows = []
        fdr = _has_fdr(df)
        for metric in sorted(df["metric"].unique()):
            for _, r in best_rows(df, metric, ["set", "model"], chance=0.0).iterrows():
                rows.append([str(r["set"]), _display(models, r["model"]), metric, str(r["layer"]),
                             _fmt(r["value"]), _ci(r), _p(r["p"], n_permutations)]
                            + ([_p(r.get("p_fdr"), n_permutations)] if fdr else [])
                            + [str(int(r["n"]))])
        lines += _markdown_table(
            ["set", "model", "metric", "best layer (max \\|value\\|)", "value", "95% CI", "p (one-sided)"]
            + (["p (FDR)"] if fdr else []) + ["n"], rows
        ) + [""]

    df = _read(tables.get("probe", []))
    lines += ["## Linear probes (balanced accuracy, cross-validated; best layer per target)", ""]
    if df.empty:
        lines += ["No rows.", ""]
    else:
        if "split" in df.columns:
            df = df[df["split"].astype(str) == "cv"]
        if "target" not in df.columns:
            df = df.assign(target="label")
        rows = []
        fdr = _has_fdr(df)
        for _, r in best_rows(df, "balanced_accuracy", ["set", "model", "target"]).iterrows():
            chance = r.get("chance")
            rows.append([str(r["set"]), _display(models, r["model"]), str(r["target"]), str(r["layer"]),
                         _fmt(r["value"]), _ci(r), "—" if pd.isna(chance) else _fmt(chance),
                         _p(r["p"], n_permutations)]
                        + ([_p(r.get("p_fdr"), n_permutations)] if fdr else []) + [str(int(r["n"]))])
        lines += _markdown_table(
            ["set", "model", "target", "best layer", "balanced accuracy", "95% CI", "chance", "p"]
            + (["p (FDR)"] if fdr else []) + ["n"], rows
        ) + [""]
        if (df["set"].astype(str) == "pseudoword_text").any():
            lines += ["Written pseudowords (`pseudoword_text`) spell their class out in their letters "
                      "(sharp and round letter inventories), so every layer decodes it (1.0 expected).", ""]

    dense = _read(tables.get("dense", []))
    if not dense.empty:
        lines += ["## Dense maps: objects on scenes from text phrases or spoken captions (patch features in "
                  "the shared space)", "",
                  "Chance: the same score with the maps of a scene's queries swapped among them "
                  "(p tests against it); no-map: a map without spatial information. Query: text phrases, "
                  "or spoken captions per word, colour+shape phrase or whole caption.", ""]
        if "query_form" not in dense:
            dense = dense.assign(query_form="text", query_unit="phrase")
        dense = dense.assign(query_form=dense["query_form"].fillna("text"), query_unit=dense["query_unit"].fillna("phrase"))
        rows = [[_display(models, r["model"]), f"{r['query_form']} ({r['query_unit']})", str(r["metric"]),
                 str(r.get("grid", "")), _fmt(r["value"]), _ci(r),
                 _fmt(r.get("chance")), _fmt(r.get("chance_uniform")), _p(r["p"], n_permutations), str(int(r["n"]))]
                for _, r in dense.sort_values(["model", "query_form", "query_unit", "metric"]).iterrows()]
        lines += _markdown_table(
            ["model", "query", "metric", "patches", "value", "95% CI", "chance", "no-map", "p", "queries"], rows
        ) + [""]

    ret = _read(tables.get("retrieval", []))
    lines += ["## Retrieval (Recall@k, %; the shared-space layer of each system)", ""]
    if ret.empty:
        lines += ["No retrieval analysis configured.", ""]
    else:
        rows = []
        recall = ret[ret["metric"].astype(str).str.startswith("R@")]
        for (name, mode, direction), sub in recall.groupby(["name", "mode", "direction"], sort=True):
            sub = sub[sub["layer"] == shared_space_layer(sub)]
            values = {r["metric"]: _fmt(100 * r["value"], 1) for _, r in sub.iterrows()}
            first = sub.iloc[0]
            rows.append([
                _display(models, first["model"]), str(mode), str(direction), str(first["layer"]),
                values.get("R@1", "—"), values.get("R@5", "—"), values.get("R@10", "—"),
                str(int(first["n"])),
            ])
        lines += _markdown_table(
            ["model", "mode", "direction", "layer", "R@1", "R@5", "R@10", "queries"], rows
        ) + [""]
        lines += ["*queries* differs between directions: a caption → image row queries every caption "
                  "(several per image), an image → caption row queries every image (a hit when any of "
                  "its captions is within k). In `cascade` mode the speech side is the ASR transcripts "
                  "of the spoken captions (the recogniser's text), not the audio.", ""]
        wer = ret[ret["metric"] == "wer"]
        for _, r in wer.drop_duplicates("name").iterrows():
            lines += [f"Word error rate of the transcripts ({r['name']}): {_fmt(100 * r['value'], 1)}%", ""]

    voices = _read(tables.get("speech_qc", []))
    if not voices.empty:
        lines += ["## Speech QC: is each voice understood? (a real recogniser, Whisper base by default)", "",
                  "Caption WER per voice (corpus WER over the voice's transcribed captions), the mean "
                  "character error rate of pseudoword transcripts against their spelling, and the share "
                  "of pseudowords whose first consonant is heard. The counts are the clips transcribed: by "
                  "default a seeded sample per voice (`stimuli.tts.qc`), so small counts mean rough numbers. "
                  "Per clip: `results/tables/speech_qc/clips.parquet`.", ""]
        rows = [[str(r["voice"]), f"{r['engine']} {r['engine_voice']}", str(int(r["n_captions"])),
                 _fmt(r["caption_wer"]), str(int(r["n_pseudowords"])), _fmt(r["pseudoword_cer"]),
                 _fmt(r["onset_survival"], 2), str(r["reason"]) if r["excluded"] else "no"]
                for _, r in voices.iterrows()]
        lines += _markdown_table(["voice", "engine", "captions", "caption WER", "pseudowords",
                                  "pseudoword CER", "onset kept", "excluded"], rows) + [""]

    rejected = _read_rejected(tables.get("rejected", []))
    lines += ["## Quarantined stimuli", ""]
    if rejected.empty:
        lines += ["None: every stimulus passed the input checks.", ""]
    else:
        counts = rejected.groupby(["set", "model", "check"]).size().reset_index(name="n")
        lines += _markdown_table(["set", "model", "check", "stimuli left out"],
                                 [[r["set"], _display(models, r["model"]), r["check"], str(r["n"])]
                                  for _, r in counts.iterrows()])
        lines += ["", "Each `results/embeddings/<set>/rejected/<model>.parquet` names the stimuli and why.", ""]

    text = "\n".join(lines)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text)
    return text
