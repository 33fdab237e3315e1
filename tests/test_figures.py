"""Figures: behaviour on synthetic tables with known values (no pipeline outputs needed)."""

from __future__ import annotations

import types
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avprobe.figures import (
    deps, probe_layers, rdm_heatmaps, retrieval_recall, rsa_layers, rsa_partial, stimulus_montage,
    style, symbolism_auc, symbolism_scores,
)
from avprobe.figures.style import plt
from avprobe.io import TABLE_COLUMNS, tidy_table
from workflow_cli import ROOT, copy_workflow, run_snakemake

#: Every drawing function by name, as the tests call them.
plots = types.SimpleNamespace(
    symbolism_auc=symbolism_auc.symbolism_auc,
    symbolism_scores=symbolism_scores.symbolism_scores,
    rsa_layers=rsa_layers.rsa_layers,
    rsa_partial=rsa_partial.rsa_partial,
    probe_layers=probe_layers.probe_layers,
    retrieval_recall=retrieval_recall.retrieval_recall,
    retrieval_tables=retrieval_recall.retrieval_tables,
    rdm_heatmaps=rdm_heatmaps.rdm_heatmaps,
    read_rdms=rdm_heatmaps.read_rdms,
    class_order=rdm_heatmaps.class_order,
    default_rdm_layers=rdm_heatmaps.default_rdm_layers,
    stimulus_montage=stimulus_montage.stimulus_montage,
)

MODELS = {
    "clip": {"family": "clip", "display": "CLIP ViT-B/32", "kind": "pretrained"},
    "speechclip": {"family": "hf_audio", "display": "SpeechCLIP", "kind": "pretrained"},
    "clip-untrained": {"family": "clip", "display": "CLIP-tiny (untrained)", "kind": "untrained"},
    "logmel": {"family": "logmel", "display": "log-mel (baseline)", "kind": "baseline"},
}


# ---------------------------------------------------------------------------------------------
# synthetic tables (also used by tests/figcheck-style rendering)


def symbolism_table(models=("clip", "clip-untrained"), layers=("10", "11", "joint"), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in models:
        for li, layer in enumerate(layers):
            for direction in ("geometric", "phonetic"):
                for form, words in (("speech", "pseudowords"), ("text", "pseudoword_text")):
                    for voice in (["all", "us_m1"] if form == "speech" else ["all"]):
                        v = 0.5 + (0.2 if m == "clip" else 0.0) + rng.normal(0, 0.03)
                        for metric in ("auc", "tau_label"):
                            rows.append(dict(
                                analysis="symbolism", set=words, model=m, layer=layer,
                                layer_index=li, metric=metric, value=v, ci_low=v - 0.04,
                                ci_high=v + 0.05, p=float(rng.choice([0.0004, 0.004, 0.03, 0.4])),
                                n=648, form=form, direction=direction, voice=voice, words=words,
                                images="shapes"))
    return tidy_table(rows)


def scores_table(models=("clip", "clip-untrained"), n=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in models:
        shift = 0.08 if m == "clip" else 0.0
        for direction in ("geometric", "phonetic"):
            for form in ("speech", "text"):
                for label in ("sharp", "round"):
                    for i in range(n):
                        rows.append(dict(
                            model=m, layer="joint", layer_index=12, direction=direction,
                            form=form, stimulus_id=f"{form}-{label}-{i}", label=label,
                            score=rng.normal(shift if label == "sharp" else -shift, 0.05)))
    return pd.DataFrame(rows)


def rsa_table(models=("clip", "clip-untrained", "logmel"), n_layers=6, partial=False, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in models:
        layers = ["mean"] if m == "logmel" else [str(i) for i in range(n_layers)] + ["joint"]
        for li, layer in enumerate(layers):
            for ref in ("label", "sharpness"):
                for part in ([False, True] if partial else [False]):
                    v = (0.1 + 0.04 * li if m == "clip" else 0.05) + rng.normal(0, 0.01)
                    rows.append(dict(
                        analysis="rsa", set="pseudoword_text", model=m, layer=layer,
                        layer_index=li, metric=f"rsa_{ref}_spearman", value=v, ci_low=v - 0.03,
                        ci_high=v + 0.03, p=0.01, n=648, p_fdr=0.02 if li % 2 else 0.2,
                        reference=ref, partial=part))
    return tidy_table(rows)


def probe_table(models=("clip", "clip-untrained", "logmel"), n_layers=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in models:
        layers = ["mean"] if m == "logmel" else [str(i) for i in range(n_layers)]
        for li, layer in enumerate(layers):
            for split in ("cv", "voice_heldout"):
                v = (0.6 + 0.05 * li if m == "clip" else 0.55) + rng.normal(0, 0.01)
                base = dict(analysis="probe", set="pseudowords", model=m, layer=layer,
                            layer_index=li, n=648, split=split)
                rows.append(dict(base, metric="accuracy", value=v, ci_low=v - 0.02,
                                 ci_high=v + 0.02, p=0.001))
                rows.append(dict(base, metric="balanced_accuracy", value=v, ci_low=v - 0.02,
                                 ci_high=v + 0.02, p=0.001))
                rows.append(dict(base, metric="chance", value=0.5))
    return tidy_table(rows)


def retrieval_table():
    values = {  # (model, mode) -> direction -> (R@1, R@5, R@10), fractions
        ("speechclip", "end_to_end"): {"speech→image": (0.391, 0.720, 0.830),
                                       "image→speech": (0.545, 0.845, 0.932)},
        ("clip", "cascade"): {"speech→image": (0.588, 0.839, 0.905),
                              "image→speech": (0.774, 0.934, 0.970)},
        ("clip", "text"): {"speech→image": (0.685, 0.899, 0.945)},
        ("clip-untrained", "text"): {"speech→image": (0.012, 0.05, 0.1),
                                     "image→speech": (0.011, 0.048, 0.097)},
    }
    rows = []
    for (m, mode), dirs in values.items():
        for direction, recalls in dirs.items():
            for k, v in zip((1, 5, 10), recalls):
                rows.append(dict(analysis="retrieval", set="captions", model=m, layer="joint",
                                 layer_index=0, metric=f"R@{k}", value=v, ci_low=v - 0.01,
                                 ci_high=v + 0.01, n=1000, mode=mode, direction=direction,
                                 name=f"{m}_{mode}"))
    return tidy_table(rows)


def rdm_entry(n_per_class=5, model="clip", set_name="shapes", seed=0):
    """Interleaved labels; distances 0.1 within class, 0.9 across, plus tiny noise."""
    rng = np.random.default_rng(seed)
    labels = np.array(["round", "sharp"] * n_per_class)
    same = labels[:, None] == labels[None, :]
    mats = {}
    for layer in ("0", "1", "2", "3", "joint"):
        m = np.where(same, 0.1, 0.9) + rng.uniform(0, 0.01, same.shape)
        m = (m + m.T) / 2
        np.fill_diagonal(m, 0.0)
        mats[layer] = m
    return {"set": set_name, "model": model, "labels": labels, "rdms": mats}


def write_stimuli(root: Path, voices=("us_m1", "gb_f4"), per_class=4, sr=16000):
    """Tiny shapes + pseudowords trees with manifests whose paths are relative to them."""
    import soundfile as sf
    from PIL import Image

    shapes_dir = root / "shapes"
    (shapes_dir / "images").mkdir(parents=True)
    rows = []
    for label in ("sharp", "round"):
        for i in range(per_class):
            img = np.full((32, 32, 3), 255, np.uint8)
            if label == "sharp":
                for r in range(32):
                    img[r, 16 - r // 2: 16 + r // 2] = 0
            else:
                yy, xx = np.mgrid[:32, :32]
                img[(yy - 16) ** 2 + (xx - 16) ** 2 < 100] = 0
            path = f"images/{label}_{i}.png"
            Image.fromarray(img).save(shapes_dir / path)
            rows.append(dict(stimulus_id=f"{label}_{i}", path=path, label=label,
                             sharpness=(1 if label == "sharp" else -1) * (i + 1) / per_class))
    pd.DataFrame(rows).to_parquet(shapes_dir / "manifest.parquet")

    words_dir = root / "pseudowords"
    (words_dir / "audio").mkdir(parents=True)
    rows = []
    t = np.arange(int(0.4 * sr)) / sr
    for word, label, f0 in (("kiki", "sharp", 3000.0), ("bouba", "round", 400.0),
                            ("tepi", "sharp", 2000.0)):
        for v in voices:
            wav = (0.2 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
            path = f"audio/{word}_{v}.wav"
            sf.write(words_dir / path, wav, sr, subtype="FLOAT")
            rows.append(dict(stimulus_id=f"{word}_{v}", path=path, word=word, voice=v,
                             engine="espeak", label=label, is_reference=word in ("kiki", "bouba"),
                             sample_rate=sr, duration=0.4, peak=0.2, rms=0.14))
    pd.DataFrame(rows).to_parquet(words_dir / "manifest.parquet")
    return shapes_dir / "manifest.parquet", words_dir / "manifest.parquet"


# ---------------------------------------------------------------------------------------------
# helpers


def by_gid(fig, prefix):
    return [a for ax in fig.axes for a in ax.get_children()
            if (a.get_gid() or "").startswith(prefix)]


def texts(fig):
    out = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in out if t]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------------------------
# style


def test_model_styles_are_deterministic_and_controls_grey_dashed():
    a = style.model_styles(MODELS)
    b = style.model_styles(dict(MODELS))
    assert a == b
    assert not style.is_grey(a["clip"].color) and a["clip"].linestyle == "-"
    assert a["clip"].color != a["speechclip"].color
    assert style.is_grey(a["clip-untrained"].color) and a["clip-untrained"].linestyle == "--"
    assert a["clip-untrained"].hatch and a["logmel"].hatch
    assert style.is_grey(a["logmel"].color) and a["logmel"].linestyle == ":"
    assert a["clip"].display == "CLIP ViT-B/32"
    # a control without "(untrained)" in its display name gets it appended
    s = style.model_styles({"x": {"kind": "untrained", "display": "X"}})
    assert s["x"].display == "X (untrained)"
    # unknown models (not in config) are styled after the configured ones
    s = style.model_styles(MODELS, extra=["zzz"])
    assert s["zzz"].order == len(MODELS) and s["zzz"].display == "zzz"


@pytest.mark.parametrize("p,mark", [(0.0009, "***"), (0.001, "**"), (0.009, "**"),
                                    (0.01, "*"), (0.049, "*"), (0.05, ""), (np.nan, ""),
                                    (None, "")])
def test_stars(p, mark):
    assert style.stars(p) == mark


def test_save_writes_pdf_with_truetype_fonts_and_png(tmp_path):
    fig = plots.symbolism_auc(symbolism_table(), MODELS)
    pdf, png = style.save(fig, tmp_path / "sub" / "auc")
    assert pdf == tmp_path / "sub" / "auc.pdf" and png == tmp_path / "sub" / "auc.png"
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    # Type 42 embeds TrueType programs as /FontFile2 and never Type 3 glyph procedures.
    raw = data + b"".join(_inflate_streams(data))
    assert b"/FontFile2" in raw
    assert b"/Subtype /Type3" not in raw
    assert png.read_bytes().startswith(b"\x89PNG")
    from PIL import Image

    with Image.open(png) as im:
        assert abs(im.info["dpi"][0] - style.DPI) < 1
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]


def _inflate_streams(data: bytes):
    for chunk in data.split(b"stream")[1:]:
        body = chunk.split(b"endstream")[0].strip(b"\r\n")
        try:
            yield zlib.decompress(body)
        except zlib.error:
            pass


# ---------------------------------------------------------------------------------------------
# symbolism_auc


def test_auc_error_bars_span_exactly_the_ci_and_chance_at_half():
    df = symbolism_table()
    fig = plots.symbolism_auc(df, MODELS)
    auc = df[(df.metric == "auc") & (df.voice == "all")]
    for _, r in auc.iterrows():
        (ci,) = [a for a in by_gid(fig, f"ci:{r.model}:{r.layer}:{r.form}")
                 if a.axes.get_title().startswith(r.direction)]
        (seg,) = ci.get_segments()
        assert seg[0][1] == pytest.approx(r.ci_low) and seg[1][1] == pytest.approx(r.ci_high)
        assert seg[0][0] == pytest.approx(seg[1][0])  # vertical
        (pt,) = [a for a in by_gid(fig, f"point:{r.model}:{r.layer}:{r.form}")
                 if a.axes is ci.axes]
        assert pt.get_ydata()[0] == pytest.approx(r.value)
        assert pt.get_xdata()[0] == pytest.approx(seg[0][0])
    chance = by_gid(fig, "chance")
    assert len(chance) == 2  # one per direction facet
    for line in chance:
        assert list(line.get_ydata()) == [0.5, 0.5]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["geometric score", "phonetic score"]


def test_auc_significance_marks_exactly_for_p_below_05():
    df = symbolism_table()
    auc = df[(df.metric == "auc") & (df.voice == "all")]
    fig = plots.symbolism_auc(df, MODELS)
    marks = sorted(a.get_text() for a in by_gid(fig, "significance"))
    expected = sorted(style.stars(p) for p in auc.p if p < 0.05)
    assert marks == expected and len(marks) < len(auc)
    # each mark sits on the CI top of its point
    for a in by_gid(fig, "significance"):
        x, y = a.xy
        assert any(y == pytest.approx(hi) for hi in auc.ci_high)


def test_auc_untrained_drawn_grey_dashed_and_speech_text_side_by_side():
    fig = plots.symbolism_auc(symbolism_table(), MODELS)
    (trend,) = [a for a in by_gid(fig, "trend:clip-untrained:speech")
                if a.axes.get_title().startswith("geometric")]
    assert trend.get_linestyle() == "--" and style.is_grey(trend.get_color())
    (trend,) = [a for a in by_gid(fig, "trend:clip:speech")
                if a.axes.get_title().startswith("geometric")]
    assert trend.get_linestyle() == "-" and not style.is_grey(trend.get_color())
    sp = by_gid(fig, "point:clip:joint:speech")[0]
    tx = by_gid(fig, "point:clip:joint:text")[0]
    assert sp.get_xdata()[0] < tx.get_xdata()[0]
    assert sp.get_markerfacecolor() != tx.get_markerfacecolor()  # filled vs hollow
    for ci in by_gid(fig, "ci:clip-untrained"):
        assert style.is_grey(ci.get_color()[0])


def test_auc_stars_follow_fdr_p_when_the_table_has_it():
    df = symbolism_table()
    df["p_fdr"] = np.where(df.p < 0.01, 0.02, 0.5)  # only p < .01 survives correction, as *
    auc = df[(df.metric == "auc") & (df.voice == "all")]
    fig = plots.symbolism_auc(df, MODELS)
    marks = [a.get_text() for a in by_gid(fig, "significance")]
    assert marks == ["*"] * int((auc.p < 0.01).sum())
    assert any("p (FDR)" in t for t in texts(fig))


def test_auc_null_band_spans_the_null_and_stars_ignore_the_item_label_test():
    df = symbolism_table()
    df = df.assign(null_low=df.value - 0.3, null_high=df.value + 0.2, p=0.4, p_item_label=0.0001)
    fig = plots.symbolism_auc(df, MODELS)
    auc = df[(df.metric == "auc") & (df.voice == "all")]
    for _, r in auc.iterrows():
        (band,) = [a for a in by_gid(fig, f"null:{r.model}:{r.layer}:{r.form}")
                   if a.axes.get_title().startswith(r.direction)]
        (seg,) = band.get_segments()
        assert (seg[0][1], seg[1][1]) == (pytest.approx(r.null_low), pytest.approx(r.null_high))
    assert not by_gid(fig, "significance")  # the primary p is .4 everywhere
    assert any("anchor labels shuffled" in t for t in texts(fig))
    assert not by_gid(plots.symbolism_auc(symbolism_table(), MODELS), "null:")  # older tables


def test_auc_single_voices_drawn_beside_their_pooled_marker():
    df = symbolism_table()
    fig = plots.symbolism_auc(df, MODELS)
    voices = df[(df.metric == "auc") & (df.voice == "us_m1")]
    for _, r in voices.iterrows():
        (dots,) = [a for a in by_gid(fig, f"voice:{r.model}:{r.layer}:{r.form}")
                   if a.axes.get_title().startswith(r.direction)]
        (pt,) = [a for a in by_gid(fig, f"point:{r.model}:{r.layer}:{r.form}")
                 if a.axes is dots.axes]
        assert list(dots.get_ydata()) == [pytest.approx(r.value)]
        assert 0 < dots.get_xdata()[0] - pt.get_xdata()[0] < 0.3  # just right of it
    assert not by_gid(fig, "voice:clip:joint:text")  # text has no voices
    assert any("single voices" in t for t in texts(fig))
    assert not by_gid(plots.symbolism_auc(df, MODELS, voices=False), "voice:")


def test_auc_single_model_single_layer_and_empty():
    df = symbolism_table(models=("clip",), layers=("joint",))
    fig = plots.symbolism_auc(df, MODELS)
    assert len(by_gid(fig, "point:clip:joint")) == 4
    assert any("CLIP ViT-B/32" in t for t in texts(fig))
    fig = plots.symbolism_auc(df.iloc[0:0], MODELS)
    assert "no rows" in " ".join(texts(fig))
    fig = plots.symbolism_auc(pd.DataFrame(), MODELS)
    assert "no rows" in " ".join(texts(fig))


# ---------------------------------------------------------------------------------------------
# symbolism_scores


def test_scores_violins_per_label_and_medians():
    df = scores_table()
    fig = plots.symbolism_scores(df, MODELS)
    violins = by_gid(fig, "violin:")
    assert len(violins) == 2 * 2 * 2 * 2  # model × direction × form × label
    sharp = by_gid(fig, "violin:clip:geometric:speech:sharp")[0]
    assert np.allclose(sharp.get_edgecolor()[0][:3],
                       plt.matplotlib.colors.to_rgb(style.LABEL_COLORS["sharp"]))
    sub = df[(df.model == "clip") & (df.direction == "geometric") & (df.form == "speech")
             & (df.label == "round")]
    (med,) = by_gid(fig, "median:clip:geometric:speech:round")
    assert med.get_ydata()[0] == pytest.approx(sub.score.median())
    # untrained controls: dashed violin outlines
    ctrl = by_gid(fig, "violin:clip-untrained:geometric:speech:sharp")[0]
    assert ctrl.get_linestyle()[0][1] is not None


def test_scores_picks_joint_layer_and_handles_tiny_and_empty():
    df = scores_table(models=("clip",), n=2)
    other = df.assign(layer="3", layer_index=3, score=df.score + 100)
    fig = plots.symbolism_scores(pd.concat([df, other]), MODELS)
    for med in by_gid(fig, "median:"):
        assert med.get_ydata()[0] < 50  # the joint layer, not layer 3
    assert by_gid(fig, "points:")  # n=2 per group: points instead of a violin
    fig = plots.symbolism_scores(df.iloc[0:0], MODELS)
    assert "no rows" in " ".join(texts(fig))
    fig = plots.symbolism_scores(pd.DataFrame({"model": ["clip"]}), MODELS)
    assert "no rows" in " ".join(texts(fig))


# ---------------------------------------------------------------------------------------------
# rsa / probes


def test_rsa_layers_curves_bands_and_baseline_line():
    df = rsa_table()
    fig = plots.rsa_layers(df, MODELS)
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in visible] == ["label RDM", "sharpness RDM"]
    clip = df[(df.model == "clip") & (df.reference == "label")].sort_values("layer_index")
    numbered = clip[clip.layer != "joint"]
    line = [a for a in by_gid(fig, "line:clip") if a.axes.get_title() == "label RDM"][0]
    # the curve runs through the numbered layers, at their numbers; joint is its own point
    assert np.allclose(line.get_ydata(), numbered.value)
    assert np.allclose(line.get_xdata(), numbered.layer.astype(int))
    band = [a for a in by_gid(fig, "band:clip") if a.axes.get_title() == "label RDM"][0]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(numbered.ci_low.min()) and ys.max() == pytest.approx(
        numbered.ci_high.max())
    joint = clip[clip.layer == "joint"].iloc[0]
    ci = [a for a in by_gid(fig, "ci:clip:joint") if a.axes is line.axes][0]
    (x0, y0), (_, y1) = ci.get_segments()[0]
    assert x0 > numbered.layer.astype(int).max() and (y0, y1) == pytest.approx(
        (joint.ci_low, joint.ci_high))
    ctrl = by_gid(fig, "line:clip-untrained")[0]
    assert ctrl.get_linestyle() == "--" and style.is_grey(ctrl.get_color())
    base = [a for a in by_gid(fig, "line:logmel") if a.axes.get_title() == "label RDM"][0]
    val = df[(df.model == "logmel") & (df.reference == "label")].value.iloc[0]
    assert list(base.get_ydata()) == [pytest.approx(val)] * 2  # horizontal line
    assert base.get_linestyle() == ":"
    # filled markers exactly where p_fdr < .05
    sig = [a for a in by_gid(fig, "sig:clip") if a.axes.get_title() == "label RDM"][0]
    assert np.allclose(sig.get_xdata(), clip[clip.p_fdr < 0.05].layer_index)
    # x tick labels name the layers, "joint" included
    labels = [t.get_text() for t in line.axes.get_xticklabels()]
    assert labels[-1] == "joint"


def test_rsa_partial_split_out_and_missing_partial_rows():
    df = rsa_table(partial=True)
    full = plots.rsa_layers(df, MODELS)
    part = plots.rsa_partial(df, MODELS)
    a = [x for x in by_gid(full, "line:clip") if x.axes.get_title() == "label RDM"][0]
    b = [x for x in by_gid(part, "line:clip") if x.axes.get_title().startswith("label")][0]
    clip = df[(df.model == "clip") & (df.reference == "label") & (df.layer != "joint")]
    exp_a = clip[~clip.partial.astype(bool)]
    exp_b = clip[clip.partial.astype(bool)]
    assert np.allclose(a.get_ydata(), exp_a.sort_values("layer_index").value)
    assert np.allclose(b.get_ydata(), exp_b.sort_values("layer_index").value)
    fig = plots.rsa_partial(rsa_table(partial=False), MODELS)
    assert "no rows" in " ".join(texts(fig))


def test_rsa_single_model_single_layer():
    df = rsa_table(models=("clip",), n_layers=0)  # only the joint layer
    fig = plots.rsa_layers(df, MODELS)
    assert by_gid(fig, "ci:clip")  # a point with its CI, not a band of zero width
    df = rsa_table(models=("logmel",))
    fig = plots.rsa_layers(df, MODELS)
    assert by_gid(fig, "line:logmel")


def test_baseline_with_several_layers_is_named_reference_lines_not_a_curve():
    df = rsa_table()
    base = df[df.model == "logmel"]
    two = pd.concat([base, base.assign(layer="meanstd", layer_index=1, value=base.value + 0.2,
                                       ci_low=base.ci_low + 0.2, ci_high=base.ci_high + 0.2)])
    df = pd.concat([df[df.model != "logmel"], two])
    fig = plots.rsa_layers(df, MODELS)
    lines = [a for a in by_gid(fig, "line:logmel") if a.axes.get_title() == "label RDM"]
    expected = sorted(two[two.reference == "label"].value)
    assert sorted(a.get_ydata()[0] for a in lines) == pytest.approx(expected)
    for a in lines:  # horizontal across the panel, in axes coordinates
        assert list(a.get_xdata()) == [0, 1] and a.get_ydata()[0] == a.get_ydata()[1]
    labels = {a.get_text() for a in by_gid(fig, "line-label:logmel")}
    assert labels == {"mean", "meanstd"}
    assert not by_gid(fig, "sig:logmel") and not by_gid(fig, "nonsig:logmel")


def test_probe_layers_chance_line_and_split_facets():
    df = probe_table()
    fig = plots.probe_layers(df, MODELS)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["cross-validation", "transfer: voice_heldout"]
    chance = by_gid(fig, "chance")
    assert len(chance) == 2 and all(list(c.get_ydata()) == [0.5, 0.5] for c in chance)
    acc = df[(df.model == "clip") & (df.metric == "accuracy") & (df.split == "cv")]
    line = [a for a in by_gid(fig, "line:clip") if a.axes.get_title() == "cross-validation"][0]
    assert np.allclose(line.get_ydata(), acc.sort_values("layer_index").value)
    # chance from the table, not assumed
    fig = plots.probe_layers(df.assign(value=np.where(df.metric == "chance", 0.25, df.value)),
                             MODELS)
    assert all(list(c.get_ydata()) == [0.25, 0.25] for c in by_gid(fig, "chance"))
    assert "no rows" in " ".join(texts(plots.probe_layers(df.iloc[0:0], MODELS)))


# ---------------------------------------------------------------------------------------------
# retrieval


def test_retrieval_markdown_has_the_right_numbers_in_the_right_cells():
    md, tex = plots.retrieval_tables(retrieval_table(), MODELS)
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["model", "mode",
                      "speech→image R@1", "speech→image R@5", "speech→image R@10",
                      "image→speech R@1", "image→speech R@5", "image→speech R@10"]
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[:2]:
            [c.strip() for c in line.strip("|").split("|")][2:] for line in lines[2:]}
    assert list(rows) == [("CLIP ViT-B/32", "cascade"), ("CLIP ViT-B/32", "text"),
                          ("SpeechCLIP", "end-to-end"), ("CLIP-tiny (untrained)", "text")]
    assert rows[("SpeechCLIP", "end-to-end")] == ["39.1", "72.0", "83.0", "54.5", "84.5", "93.2"]
    assert rows[("CLIP ViT-B/32", "text")] == ["68.5", "89.9", "94.5", "–", "–", "–"]
    assert rows[("CLIP-tiny (untrained)", "text")][:3] == ["1.2", "5.0", "10.0"]
    # LaTeX: multicolumn direction headers, escaped arrows, same numbers
    assert r"\multicolumn{3}{c}{speech$\rightarrow$image}" in tex
    assert r"\cmidrule(lr){3-5} \cmidrule(lr){6-8}" in tex
    assert "SpeechCLIP & end-to-end & 39.1 & 72.0 & 83.0 & 54.5 & 84.5 & 93.2" in tex
    assert r"\emph{Untrained controls}" in tex


def test_retrieval_chance_lines_and_chance_row():
    df = retrieval_table()
    df["chance"] = df.metric.str[2:].astype(int) / 200  # K / gallery size
    fig = plots.retrieval_recall(df, MODELS)
    for direction in ("speech→image", "image→speech"):
        for k in (1, 5, 10):
            (line,) = [a for a in by_gid(fig, f"chance:{direction}:R@{k}")
                       if a.get_gid() == f"chance:{direction}:R@{k}"]
            (seg,) = line.get_segments()
            assert seg[0][1] == seg[1][1] == pytest.approx(100 * k / 200)
            assert seg[1][0] - seg[0][0] == pytest.approx(0.9)  # across the K group
    md, tex = plots.retrieval_tables(df, MODELS)
    assert "| _chance_ | random ranking | 0.5 | 2.5 | 5.0 | 0.5 | 2.5 | 5.0 |" in md
    assert r"\emph{Chance}" in tex
    # galleries of different sizes: one chance mark per bar
    df.loc[df.model == "speechclip", "chance"] *= 2
    fig = plots.retrieval_recall(df, MODELS)
    assert len([a for a in by_gid(fig, "chance:speech→image:R@1")
                if a.get_gid().endswith("R@1")]) == 4
    assert "_chance_" not in plots.retrieval_tables(df, MODELS)[0]
    assert not by_gid(plots.retrieval_recall(df, MODELS, chance=False), "chance:")


def test_retrieval_percent_input_kept_and_empty():
    df = retrieval_table()
    df["value"] *= 100
    md, _ = plots.retrieval_tables(df, MODELS)
    assert "| 39.1 | 72.0 | 83.0 |" in md
    md, tex = plots.retrieval_tables(df.iloc[0:0], MODELS)
    assert "No retrieval rows" in md


def test_retrieval_recall_bars_heights_and_hatched_controls():
    df = retrieval_table()
    fig = plots.retrieval_recall(df, MODELS)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["speech→image", "image→speech"]
    (bar,) = by_gid(fig, "bar:speechclip_end_to_end:speech→image:R@5")
    assert bar.get_height() == pytest.approx(72.0)
    (ctrl,) = by_gid(fig, "bar:clip-untrained_text:image→speech:R@10")
    assert ctrl.get_hatch() and style.is_grey(ctrl.get_facecolor())
    assert not bar.get_hatch()
    bars = by_gid(fig, "bar:")
    assert len(bars) == len(df)
    one = plots.retrieval_recall(df[df.model == "speechclip"].head(1), MODELS)
    assert len(by_gid(one, "bar:")) == 1
    assert "no rows" in " ".join(texts(plots.retrieval_recall(df.iloc[0:0], MODELS)))


# ---------------------------------------------------------------------------------------------
# RDM heatmaps


def test_class_order_is_stable_and_sharp_first():
    order, bounds, classes = plots.class_order(["round", "sharp", "round", "sharp", "sharp"])
    assert list(order) == [1, 3, 4, 0, 2] and bounds == [3] and classes == ["sharp", "round"]


def test_rdm_heatmap_orders_stimuli_by_class_and_marks_boundary():
    entry = rdm_entry(n_per_class=5)
    fig = plots.rdm_heatmaps([entry], MODELS, layers=["0", "joint"], percentile=False)
    images = [a for a in by_gid(fig, "rdm:clip:shapes:")]
    assert [im.get_gid().split(":")[-1] for im in images] == ["0", "joint"]
    shown = images[0].get_array()
    order, _, _ = plots.class_order(entry["labels"])
    assert np.allclose(shown, entry["rdms"]["0"][np.ix_(order, order)])
    # block structure: within-class blocks low, across-class high
    assert shown[:5, :5].max() < 0.2 and shown[5:, 5:].max() < 0.2 and shown[:5, 5:].min() > 0.8
    bounds = by_gid(fig, "class-boundary")
    assert {tuple(b.get_xdata()) if b.get_xdata()[0] == b.get_xdata()[1] else
            tuple(b.get_ydata()) for b in bounds} == {(5, 5)}
    ax = images[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sharp", "round"]


def test_rdm_heatmap_defaults_percentile_downsampling_and_empty(tmp_path):
    entry = rdm_entry(n_per_class=40)
    fig = plots.rdm_heatmaps([entry, rdm_entry(model="clip-untrained")], MODELS, max_size=20)
    images = by_gid(fig, "rdm:")
    assert len(images) == 6  # first, middle, last layer per file
    assert [im.get_gid().split(":")[-1] for im in images[:3]] == ["0", "2", "joint"]
    arr = images[0].get_array()
    assert arr.shape == (20, 20) and np.nanmin(arr) >= 0 and np.nanmax(arr) <= 100
    assert "no rows" in " ".join(texts(plots.rdm_heatmaps([], MODELS)))
    # npz round trip: keys <layer> and labels, set/model from the path
    path = tmp_path / "rsa" / "shapes" / "clip.rdms.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, labels=entry["labels"], **entry["rdms"])
    loaded = plots.read_rdms(path)
    assert loaded["set"] == "shapes" and loaded["model"] == "clip"
    assert list(loaded["rdms"]) == ["0", "1", "2", "3", "joint"]


def test_default_rdm_layers_orders_numerically():
    assert plots.default_rdm_layers(["10", "2", "joint", "0", "5"]) == ["0", "5", "joint"]
    assert plots.default_rdm_layers(["mean"]) == ["mean"]


# ---------------------------------------------------------------------------------------------
# stimulus montage


def test_stimulus_montage_reads_relative_paths(tmp_path):
    shapes, words = write_stimuli(tmp_path)
    fig = plots.stimulus_montage(pd.read_parquet(shapes), pd.read_parquet(words),
                                 shapes_root=shapes.parent, pseudowords_root=words.parent,
                                 n_per_class=3)
    assert len(by_gid(fig, "shape:sharp")) == 3 and len(by_gid(fig, "shape:round")) == 3
    specs = by_gid(fig, "spectrogram:")
    assert sorted(s.get_gid() for s in specs) == sorted(
        f"spectrogram:{w}:{v}" for w in ("kiki", "bouba") for v in ("us_m1", "gb_f4"))
    # kiki is a 3 kHz tone, bouba 400 Hz: the spectrogram's peak frequency shows it
    for s in specs:
        arr = np.asarray(s.get_array()).reshape(len(s._coordinates) - 1, -1)
        freqs = s._coordinates[:-1, 0, 1]
        peak = freqs[arr.mean(axis=1).argmax()]
        assert (peak > 2.5) if ":kiki:" in s.get_gid() else (peak < 0.6)


def test_stimulus_montage_empty_manifests():
    fig = plots.stimulus_montage(pd.DataFrame(), pd.DataFrame())
    assert " ".join(texts(fig)).count("no rows") == 2


# ---------------------------------------------------------------------------------------------
# entry script


def _run_entry(figure, inputs, outputs, tmp_path, params=None):
    import runpy

    def namedlist(d):
        ns = types.SimpleNamespace(**d)
        return ns

    snakemake = types.SimpleNamespace(
        params=namedlist(dict(figure=figure, models=MODELS, **(params or {}))),
        input=namedlist(inputs),
        output=namedlist(outputs),
        log=[str(tmp_path / "logs" / f"{figure}.log")],
        threads=1,
    )
    script = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "figure.py"
    runpy.run_path(str(script), init_globals={"snakemake": snakemake})


def test_entry_script_table_figures(tmp_path):
    tables = {}
    for name, df in (("rsa", rsa_table(partial=True)), ("ret", retrieval_table())):
        tables[name] = tmp_path / f"{name}.parquet"
        df.to_parquet(tables[name])
    # two files concatenated: a second retrieval table with another system
    extra = retrieval_table().query("model == 'speechclip'").assign(
        model="clip", mode="fusion", name="clip_fusion")
    extra.to_parquet(tmp_path / "ret2.parquet")
    # every table figure goes through the same code path; saving is the slow part, so two
    # figures go all the way to disk and the rest only check the name → function mapping
    assert set(deps.FIGURES) == {"symbolism_auc", "symbolism_scores", "symbolism_forms", "rsa_layers",
                                 "rsa_partial", "probe_layers", "retrieval_recall",
                                 "rdm_heatmaps", "stimulus_montage", "dense_heatmaps"}
    jobs = {
        "rsa_partial": [tables["rsa"]],
        "retrieval_recall": [tables["ret"], tmp_path / "ret2.parquet"],
    }
    for figure, paths in jobs.items():
        out = {"pdf": str(tmp_path / "fig" / f"{figure}.pdf"),
               "png": str(tmp_path / "fig" / f"{figure}.png")}
        if figure == "retrieval_recall":
            out.update(markdown=str(tmp_path / "ret.md"), latex=str(tmp_path / "ret.tex"))
        _run_entry(figure, {"tables": [str(p) for p in paths]}, out, tmp_path)
        assert Path(out["pdf"]).read_bytes().startswith(b"%PDF")
        assert Path(out["png"]).stat().st_size > 1000
    md = (tmp_path / "ret.md").read_text()
    assert "fusion" in md and "39.1" in md
    assert (tmp_path / "ret.tex").read_text().startswith("% Recall@K")


def test_entry_script_rdm_montage_and_empty_table(tmp_path):
    entry = rdm_entry()
    npz = tmp_path / "rsa" / "shapes" / "clip.rdms.npz"
    npz.parent.mkdir(parents=True)
    np.savez(npz, labels=entry["labels"], **entry["rdms"])
    out = {"pdf": str(tmp_path / "rdm.pdf"), "png": str(tmp_path / "rdm.png")}
    _run_entry("rdm_heatmaps", {"rdms": [str(npz)]}, out, tmp_path,
               params={"options": {"layers": ["1", "joint"]}})
    assert Path(out["png"]).exists()
    shapes, words = write_stimuli(tmp_path / "stimuli")
    out = {"pdf": str(tmp_path / "m.pdf"), "png": str(tmp_path / "m.png")}
    _run_entry("stimulus_montage", {"shapes": str(shapes), "shapes_dir": "x",
                                    "pseudowords": str(words), "pseudowords_dir": "y"},
               out, tmp_path)
    assert Path(out["pdf"]).exists()
    empty = tmp_path / "empty.parquet"
    pd.DataFrame(columns=list(TABLE_COLUMNS)).to_parquet(empty)
    out = {"pdf": str(tmp_path / "e.pdf"), "png": str(tmp_path / "e.png")}
    _run_entry("probe_layers", {"tables": [str(empty)]}, out, tmp_path)
    assert Path(out["png"]).exists()
    with pytest.raises(ValueError, match="unknown figure"):
        _run_entry("nope", {}, out, tmp_path)


def test_render_options_size_and_unknown_option(tmp_path):
    from avprobe.figures.render import render_figure

    path = tmp_path / "rsa.parquet"
    rsa_table().to_parquet(path)
    out = dict(pdf=tmp_path / "f.pdf", png=tmp_path / "f.png")
    render_figure("rsa_layers", tables=[path], models=MODELS,
                  options={"size": [3.0, 2.0], "references": ["sharpness"]}, **out)
    from PIL import Image

    with Image.open(out["png"]) as img:  # bbox "tight" trims a little
        assert img.size[0] <= 3.0 * style.DPI + 2 and img.size[1] <= 2.0 * style.DPI + 2
    with pytest.raises(ValueError, match=r"unknown option\(s\) referencs; valid: references, sets, layer_axis, size"):
        render_figure("rsa_layers", tables=[path], models=MODELS,
                      options={"referencs": ["label"]}, **out)


@pytest.mark.parametrize("figure,table", [
    ("symbolism_auc", symbolism_table), ("rsa_layers", rsa_table), ("probe_layers", probe_table),
    ("retrieval_recall", retrieval_table), ("symbolism_scores", scores_table),
])
def test_every_table_figure_draws_a_single_row(figure, table):
    df = table()
    if figure == "probe_layers":
        one = df[df.metric == "balanced_accuracy"].head(1)
    elif figure == "symbolism_auc":
        one = df[(df.metric == "auc") & (df.voice == "all")].head(1)
    else:
        one = df.head(1)
    fig = getattr(plots, figure)(one, MODELS)
    assert "no rows" not in " ".join(texts(fig))
    assert by_gid(fig, "point:") or by_gid(fig, "line:") or by_gid(fig, "bar:") or by_gid(
        fig, "points:") or by_gid(fig, "ci:")


# ---------------------------------------------------------------------------------------------
# the layouts the analysis stage actually writes


def test_read_rdms_stacked_layout_of_the_rsa_analysis(tmp_path):
    entry = rdm_entry(n_per_class=4)
    names = list(entry["rdms"])
    path = tmp_path / "pseudowords" / "clip-untrained.rdms.npz"
    path.parent.mkdir()
    np.savez_compressed(path, rdms=np.stack([entry["rdms"][n] for n in names]).astype(np.float32),
                        layers=np.array(names), layer_index=np.arange(len(names)),
                        unit_id=np.array([f"u{i}" for i in range(8)]), label=entry["labels"],
                        distance=np.asarray("cosine"))
    loaded = plots.read_rdms(path)
    assert loaded["set"] == "pseudowords" and loaded["model"] == "clip-untrained"
    assert list(loaded["rdms"]) == names and list(loaded["labels"]) == list(entry["labels"])
    fig = plots.rdm_heatmaps([loaded], MODELS, layers=["joint"], percentile=False)
    (im,) = by_gid(fig, "rdm:")
    order, _, _ = plots.class_order(entry["labels"])
    assert np.allclose(im.get_array(), entry["rdms"]["joint"][np.ix_(order, order)], atol=1e-6)
    assert any("cosine dissimilarity" in t for t in texts(fig))


def test_retrieval_uses_one_layer_per_system():
    df = retrieval_table()
    hidden = df.assign(layer="3", layer_index=3, value=0.0001, ci_low=0.0, ci_high=0.001)
    both = pd.concat([hidden, df])
    md, _ = plots.retrieval_tables(both, MODELS)
    assert "| SpeechCLIP | end-to-end | 39.1 |" in md  # the joint layer, not layer 3
    md, _ = plots.retrieval_tables(both, MODELS, layer="3")
    assert "| SpeechCLIP | end-to-end | 0.0 |" in md
    fig = plots.retrieval_recall(both, MODELS)
    assert len(by_gid(fig, "bar:")) == len(df)


def test_probe_chance_column_and_targets():
    df = probe_table()
    df = df[df.metric != "chance"].assign(chance=0.3, target="label")
    voice = df.assign(target="voice", chance=1 / 6, value=df.value - 0.3,
                      ci_low=df.ci_low - 0.3, ci_high=df.ci_high - 0.3)
    fig = plots.probe_layers(pd.concat([df, voice]), MODELS)
    chance = sorted({round(c.get_ydata()[0], 3) for c in by_gid(fig, "chance")})
    assert chance == [round(1 / 6, 3), 0.3]
    ylabels = [ax.get_ylabel() for ax in fig.axes if ax.get_visible() and ax.get_ylabel()]
    assert ylabels == ["pseudowords · label\nbalanced accuracy", "pseudowords · voice\nbalanced accuracy"]


# ---------------------------------------------------------------------------------------------
# per-figure regeneration, through the real snakemake CLI on a finished minimal study

FIGURE_CODE = "workflow/scripts/avprobe/figures"
#: Jobs downstream of every figure (the run's target and the provenance table of all outputs).
AGGREGATORS = {"all", "provenance"}
#: The smallest study that still runs every stage a figure hangs on: one baseline on shapes
#: (extraction, RSA, probes), and the pseudowords of the stimulus montage.
MINIMAL_CONFIG = """\
seed: 0
stimuli:
  pseudowords: {words_per_class: 2}
  tts:
    voices: [{id: us_m1, engine: espeak, voice: en-us, variant: m1}]
  shapes: {per_class: 4, size: 32}
  scenes: {images: 2, captions_per_image: 1, size: 32}
models:
  pixels: {family: pixels, display: "pixels (baseline)", kind: baseline, towers: [image],
           layers: [rgb], size: 8}
analysis:
  n_permutations: 9
  n_bootstrap: 9
  symbolism: []
  retrieval: []
  probe: {folds: 2, C: [1.0]}
"""


def _snakemake(work: Path, *args: str, check: bool = True):
    return run_snakemake(*args, cwd=work, check=check, timeout=600)


def _planned(work: Path, *args: str) -> set[str]:
    out = _snakemake(work, "-n", *args).stdout
    return {line.strip()[len("rule "):-1] for line in out.splitlines()
            if line.strip().startswith("rule ") and line.strip().endswith(":")}


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A scratch copy of the workflow whose minimal study has run to the end."""
    work = copy_workflow(tmp_path_factory.mktemp("regen"), MINIMAL_CONFIG)
    _snakemake(work, "--cores", "2")
    return work


def _edit(path: Path):
    """Append a comment to ``path`` (a content change: snakemake ignores a bare touch of an
    input whose checksum it recorded); returns a function restoring it."""
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    return lambda: path.write_text(original)


def test_editing_a_figure_module_reruns_exactly_that_figure(finished_study):
    figures = finished_study / FIGURE_CODE
    for module, expected in (
        ("rsa_layers.py", {"figure_rsa_layers"}),
        # the shared style reruns every figure of the study
        ("style.py", {"figure_stimulus_montage", "figure_rsa_layers", "figure_probe_layers",
                      "figure_rdm_heatmaps"}),
    ):
        restore = _edit(figures / module)
        try:
            planned = _planned(finished_study)
        finally:
            restore()
        assert planned - AGGREGATORS == expected, (module, planned)
        assert not {r for r in planned if "extract" in r or r in ("rsa", "probe")}
    assert _planned(finished_study) == set()  # the same content again: nothing to redo


def test_changing_one_figures_options_reruns_only_that_figure(finished_study):
    extra = finished_study / "figure_options.yaml"
    extra.write_text("figures:\n  rdm_heatmaps: {layers: [rgb], max_height: 6}\n")
    planned = _planned(finished_study, "--configfile", str(extra))
    assert planned - AGGREGATORS == {"figure_rdm_heatmaps"}, planned
    # a typo in an option name fails before any job, naming the key
    extra.write_text("figures:\n  rdm_heatmaps: {layer: [rgb]}\n")
    proc = _snakemake(finished_study, "-n", "--configfile", str(extra), check=False)
    assert proc.returncode != 0 and "layer" in proc.stdout + proc.stderr


def test_rules_list_each_figures_own_modules():
    for figure in deps.FIGURES:
        names = {p.name for p in deps.sources(figure)}
        assert f"{figure}.py" in names and {"style.py", "common.py", "render.py"} <= names
        others = {f"{f}.py" for f in deps.FIGURES if f != figure}
        # rsa_partial draws with rsa_layers' code; no other figure uses another's module
        assert names & others == ({"rsa_layers.py"} if figure == "rsa_partial" else set())


def test_schema_options_are_the_drawing_functions_keywords():
    import inspect

    import yaml

    from avprobe.figures import render

    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    figures = schema["properties"]["figures"]["properties"]
    assert set(figures) == set(deps.FIGURES)
    for figure, spec in figures.items():
        func = getattr(render.figure_module(figure), figure)
        module = render.figure_module(figure)
        params = set(list(inspect.signature(func).parameters)[2:]) - set(
            getattr(module, "NOT_OPTIONS", ()))
        options = set(spec["properties"])
        assert options == params | set(render.COMMON_OPTIONS), figure


def test_symbolism_forms_groups_models_by_architecture_and_draws_differences():
    from avprobe.figures.symbolism_forms import symbolism_forms

    rows = []
    for model, arch in (("speechclip", "coordinated"), ("clip", "coordinated")):
        for form, value in (("speech", 0.7), ("text", 0.6), ("cascade", 0.55)):
            rows.append(dict(model=model, metric="auc_words", form=form, form_b=None, voice="all", value=value,
                             ci_low=value - 0.05, ci_high=value + 0.05, architecture=arch, layer="joint"))
            if form == "speech":
                rows.append(dict(model=model, metric="auc_words", form=form, form_b=None, voice="v1", value=0.72,
                                 ci_low=0.6, ci_high=0.8, architecture=arch, layer="joint"))
        rows.append(dict(model=model, metric="auc_diff", form="speech", form_b="text", voice="all", value=0.1,
                         ci_low=0.02, ci_high=0.18, architecture=arch, layer="joint"))
    fig = symbolism_forms(pd.DataFrame(rows), MODELS)
    assert len(by_gid(fig, "point:")) == 6 and len(by_gid(fig, "voice:")) == 2
    assert len(by_gid(fig, "diff:")) == 2
    assert "coordinated" in " ".join(texts(fig))
    assert "no rows" in " ".join(texts(symbolism_forms(pd.DataFrame(), MODELS)))


# ---------------------------------------------------------------------------------------------
# what a reviewer would object to (issue 16)

DEPTH_MODELS = dict(MODELS, minilm={"display": "MiniLM", "kind": "pretrained"},
                    pixels={"display": "pixels (baseline)", "kind": "baseline"})


def different_depths(partial=False):
    """MiniLM with layers 0–6 next to CLIP-tiny with 0–4 + joint (layer_index 5) and log-mel."""
    deep = rsa_table(models=("minilm",), n_layers=7, partial=partial)
    deep = deep[deep.layer != "joint"]
    shallow = rsa_table(models=("clip-untrained", "logmel"), n_layers=5, partial=partial, seed=1)
    assert shallow[shallow.layer == "joint"].layer_index.iloc[0] == 5  # the index MiniLM's 5 has
    return pd.concat([deep, shallow], ignore_index=True)


def _ticks(ax):
    return {t.get_text(): t.get_position()[0] for t in ax.get_xticklabels()}


def _xy(fig, gid, title="label RDM"):
    out = {}
    for a in by_gid(fig, gid):
        if a.axes.get_title() == title and hasattr(a, "get_xdata"):
            out.update(zip(a.get_xdata(), a.get_ydata()))
    return out


def test_rsa_layers_places_layers_by_name_for_models_of_different_depths():
    df = different_depths()
    fig = plots.rsa_layers(df, DEPTH_MODELS)
    ax = fig.panels[("pseudoword_text", "label")]
    ticks = _ticks(ax)
    # every name keeps its label: 0–6 at their numbers, joint on its own tick past the deepest
    assert [ticks[str(i)] for i in range(7)] == list(range(7))
    assert ticks["joint"] > 6
    mini = df[(df.model == "minilm") & (df.reference == "label")]
    assert _xy(fig, "line:minilm") == pytest.approx(dict(zip(mini.layer.astype(int), mini.value)))
    clip = df[(df.model == "clip-untrained") & (df.reference == "label")]
    assert sorted(_xy(fig, "line:clip-untrained")) == [0, 1, 2, 3, 4]
    joint = clip[clip.layer == "joint"].value.iloc[0]
    points = {**_xy(fig, "sig:clip-untrained"), **_xy(fig, "nonsig:clip-untrained")}
    assert points[ticks["joint"]] == pytest.approx(joint)  # CLIP's joint is not at MiniLM's 5
    assert 5 not in points and 6 not in points
    # no line crosses MiniLM's layers 5 and 6 on CLIP's behalf: joint hangs on a thin link
    link = [a for a in by_gid(fig, "link:clip-untrained:joint") if a.axes is ax][0]
    assert list(link.get_xdata()) == [4, ticks["joint"]] and link.get_linewidth() < 1


def test_rsa_layers_relative_depth_axis_is_an_option():
    df = different_depths()
    fig = plots.rsa_layers(df, DEPTH_MODELS, layer_axis="depth")
    ax = fig.panels[("pseudoword_text", "label")]
    assert sorted(_xy(fig, "line:minilm")) == pytest.approx([i / 6 for i in range(7)])
    assert sorted(_xy(fig, "line:clip-untrained")) == pytest.approx([i / 4 for i in range(5)])
    ticks = _ticks(ax)
    assert ticks["first"] == 0 and ticks["last"] == 1 and ticks["joint"] > 1
    assert ax.get_xlabel() == "relative depth"
    with pytest.raises(ValueError, match="layer_axis"):
        plots.rsa_layers(df, DEPTH_MODELS, layer_axis="index")
    # depth is relative to the tower that embedded the set: one model, a 7-layer tower for
    # one set and a 3-layer tower for another, reaches "last" in both panels
    two = pd.concat([rsa_table(models=("clip",), n_layers=7),
                     rsa_table(models=("clip",), n_layers=3).assign(set="pseudowords")])
    fig = plots.rsa_layers(two, DEPTH_MODELS, layer_axis="depth")
    for set_name in ("pseudoword_text", "pseudowords"):
        line = [a for a in by_gid(fig, "line:clip") if a.axes is fig.panels[(set_name, "label")]][0]
        assert line.get_xdata()[0] == 0 and line.get_xdata()[-1] == pytest.approx(1)
    assert len([a for a in by_gid(fig, "named-layers") if a.axes is ax]) <= 1


def test_probe_layers_places_layers_by_name_too():
    deep = probe_table(models=("minilm",), n_layers=7)
    shallow = probe_table(models=("clip-untrained",), n_layers=5)
    shallow = pd.concat([shallow, shallow[shallow.layer == "4"].assign(layer="joint", layer_index=5)])
    fig = plots.probe_layers(pd.concat([deep, shallow]), DEPTH_MODELS)
    ax = [a for a in fig.axes if a.get_title() == "cross-validation"][0]
    ticks = _ticks(ax)
    assert ticks["5"] == 5 and ticks["6"] == 6 and ticks["joint"] > 6


def test_two_baselines_are_told_apart_by_line_style_and_marker():
    styles = style.model_styles(DEPTH_MODELS)
    a, b = styles["logmel"], styles["pixels"]
    assert a.linestyle != b.linestyle and a.marker != b.marker
    assert a.linestyle == ":"  # the first keeps the plain dotted line
    df = different_depths()
    df = pd.concat([df, df[df.model == "logmel"].assign(model="pixels", value=0.3)])
    fig = plots.rsa_layers(df, DEPTH_MODELS)
    marks = {m: [x for x in by_gid(fig, f"marks:{m}") if x.axes.get_title() == "label RDM"][0]
             for m in ("logmel", "pixels")}
    assert marks["logmel"].get_marker() != marks["pixels"].get_marker()
    legend = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(),
                                               fig.legends[0].legend_handles)}
    assert legend["log-mel (baseline)"].get_marker() == a.marker
    assert legend["pixels (baseline)"].get_linestyle() != legend["log-mel (baseline)"].get_linestyle()


def test_rsa_partial_names_the_covariate_and_the_one_sided_test():
    df = different_depths(partial=True)
    df["covariate"] = np.where(df.partial.astype(bool), "results/embeddings/pseudoword_text/logmel.parquet", "")
    fig = plots.rsa_partial(df, DEPTH_MODELS)
    assert "log-mel" in fig.get_suptitle() and "regressed out" in fig.get_suptitle()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "one-sided p (FDR) < .05 (H1: > 0)" in labels
    assert any("< 0" in t for t in labels if "n.s." in t)
    plain = plots.rsa_layers(df, DEPTH_MODELS)
    assert not plain.get_suptitle() and "one-sided" not in " ".join(texts(plain))


def test_auc_axis_says_which_side_is_round_and_text_is_hollow_whatever_forms_are_present():
    df = symbolism_table()
    for table in (df, df[df.form == "text"]):
        fig = plots.symbolism_auc(table, MODELS)
        for ax in (a for a in fig.axes if a.get_ylabel()):
            assert "round = 1" in ax.get_ylabel()
            above, below = ([a for a in ax.texts if a.get_gid() == g][0]
                            for g in ("side:above", "side:below"))
            assert "round–round" in above.get_text() and "reversed" in below.get_text()
            assert above.xy[1] == below.xy[1] == 0.5
        text_points = by_gid(fig, "point:clip:joint:text")
        assert text_points and all(p.get_markerfacecolor() == "white" for p in text_points)
        legend = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(),
                                                   fig.legends[0].legend_handles)}
        assert legend["text"].get_markerfacecolor() == "white"
    fig = plots.symbolism_auc(df, MODELS)
    speech = by_gid(fig, "point:clip:joint:speech")
    assert all(p.get_markerfacecolor() != "white" for p in speech)


def test_scores_share_one_y_scale_name_the_unit_and_the_layer_on_each_panel():
    df = scores_table()
    df.loc[df.model == "clip-untrained", "score"] *= 0.2
    fig = plots.symbolism_scores(df, MODELS)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len({ax.get_ylim() for ax in panels}) == 1
    assert all("layer joint" in ax.get_title() for ax in panels)
    assert "cos(round anchors)" in panels[0].get_ylabel() and "cos(sharp anchors)" in panels[0].get_ylabel()
    assert {t.get_text() for ax in panels for t in ax.texts if (t.get_gid() or "").startswith("anchors:")} == {
        "pseudowords vs\nshape anchors", "shapes vs\npseudoword anchors"}
    fig = plots.symbolism_scores(df, MODELS, share_y=False)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len({ax.get_ylim() for ax in panels}) > 1
    assert fig.legends[0].get_title().get_text() == "y scales differ between panels"


def test_probe_layers_a_page_grid_balanced_accuracy_and_the_spelled_label_note():
    sets = ["pseudowords", "pseudoword_text", "shapes", "impacts", "pseudoword_asr"]
    df = pd.concat([probe_table(models=("clip",)).assign(set=s) for s in sets])
    df = df[df.split == "cv"]
    # written pseudowords: the class is in the letters, so a text model decodes it everywhere
    df.loc[(df.set == "pseudoword_text") & (df.metric != "chance"), "value"] = 1.0
    fig = plots.probe_layers(df, MODELS)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(sets)
    width, height = fig.get_size_inches()
    assert width <= style.DOUBLE and height < 2 * width  # a grid, not a 2385 px column
    assert max(ax.get_subplotspec().get_geometry()[1] for ax in visible) == 3
    assert {ax.get_ylabel() for ax in visible if ax.get_ylabel()} == {"balanced accuracy"}
    notes = [t for ax in visible for t in ax.texts if (t.get_gid() or "").startswith("note:spelled")]
    assert len(notes) == 1 and "letters" in notes[0].get_text()
    assert "pseudoword_text" in notes[0].axes.get_title()
    # a model that does not sit at 1.0 (an untrained one) gets no such claim
    df.loc[(df.set == "pseudoword_text") & (df.layer == "3"), "value"] = 0.6
    fig = plots.probe_layers(df, MODELS)
    assert not [t for ax in fig.axes for t in ax.texts if (t.get_gid() or "").startswith("note:")]


def test_retrieval_bars_centred_on_each_k_in_every_panel_and_cascade_names_transcripts():
    df = retrieval_table()
    fig = plots.retrieval_recall(df, MODELS)
    for ax in (a for a in fig.axes if a.get_visible() and a.get_title()):
        direction = ax.get_title().split("\n")[0]
        bars = [b for b in by_gid(fig, "bar:") if b.axes is ax]
        n = df[(df.direction == direction)].name.nunique()
        assert len(bars) == 3 * n
        for k, centre in ((1, 0), (5, 1), (10, 2)):
            xs = [b.get_x() + b.get_width() / 2 for b in bars if b.get_gid().endswith(f"R@{k}")]
            assert np.mean(xs) == pytest.approx(centre)
            assert max(xs) - min(xs) == pytest.approx((n - 1) * 0.8 / n)  # bars fill the slot
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("cascade" in t and "ASR transcripts" in t for t in labels)
    assert "cascade mode, their ASR transcripts" in fig.get_suptitle()
    text_only = df[df["mode"] == "text"]
    assert not plots.retrieval_recall(text_only, MODELS).get_suptitle()


def test_retrieval_ci_drawn_in_every_panel_for_every_bar_even_of_zero_width():
    df = retrieval_table()
    # the tiny run's cascade image→speech: an untrained recogniser writes identical
    # transcripts, every query ties, and the bootstrap CI has zero width
    flat = (df["name"] == "clip_cascade") & (df.direction == "image→speech")
    df.loc[flat, "ci_low"] = df.loc[flat, "value"]
    df.loc[flat, "ci_high"] = df.loc[flat, "value"]
    fig = plots.retrieval_recall(df, MODELS)
    bars = {b.get_gid()[4:] for b in by_gid(fig, "bar:")}
    assert bars == {c.get_gid()[3:] for c in by_gid(fig, "ci:")}
    caps = {c.get_gid()[4:]: c for c in by_gid(fig, "cap:")}
    assert set(caps) == bars
    for k in (1, 5, 10):
        cap = caps[f"clip_cascade:image→speech:R@{k}"]
        ys = {round(seg[0][1], 6) for seg in cap.get_segments()}
        assert len(ys) == 1 and cap.get_linewidth()[0] > 1  # one thick tick at the value
    labels = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "zero width" in labels


def _dense_example(model="clip", seed=0):
    rng = np.random.default_rng(seed)
    shapes = np.full((3, 32, 32, 3), 255, np.uint8)
    shapes[:, 8:24, 8:24] = [200, 30, 30]
    scenes = np.full((2, 32, 32, 3), 240, np.uint8)
    masks = np.zeros((3, 32, 32), bool)
    masks[:, 2:12, 2:12] = True
    return dict(model=np.array(model), query_form=np.array("text"), query_unit=np.array("phrase"),
                word_form=np.array("text"), word_text=np.array(["kiki", "bouba"]),
                shape_ids=np.array(["a", "b", "c"]), shape_labels=np.array(["sharp", "round", "round"]),
                shape_images=shapes, word_maps=rng.normal(0.2, 0.05, (2, 3, 4, 4)).astype(np.float32),
                scene_ids=np.array(["s0", "s1"]), scene_images=scenes, query_image=np.array([0, 0, 1]),
                query_text=np.array(["a blue square", "x", "y"]),
                query_maps=rng.normal(0.3, 0.05, (3, 4, 4)), query_masks=masks,
                query_hit=np.array([1.0, 0.0, 1.0]), query_auc=np.array([0.9, 0.4, 0.7]))


def test_dense_maps_beside_untouched_images_on_one_colour_scale_per_model():
    from avprobe.figures.dense_heatmaps import dense_heatmaps

    e = _dense_example()
    fig = dense_heatmaps([e, _dense_example("clip-untrained", 1)], MODELS)
    maps = [a for a in fig.findobj() if (a.get_gid() or "").startswith("map:clip:")]
    images = [a for a in fig.findobj() if (a.get_gid() or "").startswith("image:clip:")]
    assert len(maps) == 2 * 3 + 2 and len(images) == 3 + 2
    # the stimulus is drawn alone, never under a map: no axes holds both
    assert not {a.axes for a in maps} & {a.axes for a in images}
    assert all(a.get_alpha() in (None, 1.0) for a in maps)
    shown = np.concatenate([e["word_maps"].ravel(), e["query_maps"][[0, 2]].ravel()])
    assert all(a.get_clim() == pytest.approx((shown.min(), shown.max())) for a in maps)
    bar = [a for a in fig.findobj() if getattr(a, "get_gid", lambda: None)() == "colorbar:clip"][0]
    assert "cosine similarity" in bar.get_ylabel()
    # options: per-map min–max, and the old blend over the image
    fig = dense_heatmaps([e], MODELS, shared_scale=False, overlay=True)
    maps = [a for a in fig.findobj() if (a.get_gid() or "").startswith("map:clip:")]
    assert {a.get_clim() for a in maps} == {(0, 1)}
    assert all(len(a.axes.get_images()) == 2 for a in maps)


def test_summary_p_values_effect_size_either_way_and_reading_notes(tmp_path):
    from avprobe.summary import _p, best_rows, summarize

    assert _p(1 / 1001, 1000) == "< .001" and _p(0.0004) == "< .001"
    assert _p(0.049) == ".049" and _p(np.nan) == "—"
    assert _p(0.01, 99) == "≤ .010 (floor)"
    rows = pd.DataFrame(dict(model="m", form="speech", direction="geometric", metric="auc",
                             layer=["1", "2", "3"], value=[0.62, 0.18, 0.5]))
    assert best_rows(rows, "auc", ["model"], chance=0.5).layer.tolist() == ["2"]
    sym = symbolism_table()
    sym["p_fdr"] = sym["p"]
    sym.loc[(sym.model == "clip-untrained") & (sym.layer == "11") & (sym.metric == "auc"), "value"] = 0.1
    paths = {}
    for key, table in (("symbolism", sym), ("retrieval", retrieval_table())):
        paths[key] = [str(tmp_path / f"{key}.parquet")]
        table.to_parquet(paths[key][0])
    md = summarize(paths, MODELS, tmp_path / "summary.md", n_permutations=1000)
    assert "0.0010" not in md and "< .001" in md
    assert "uncorrected" in md and "p (FDR)" in md and "Benjamini–Hochberg" in md
    assert "bootstrap" in md and "permutation" in md and ".049" in md
    assert "0.100 (reversed)" in md  # the reversed effect is the best layer, not hidden
    assert "differs between directions" in md and "ASR transcripts" in md
    import re

    for block in md.split("\n\n"):  # every table row has as many cells as its header
        rows = [r for r in block.splitlines() if r.startswith("|")]
        cells = {len(re.split(r"(?<!\\)\|", r)) for r in rows}
        assert len(cells) <= 1, block


@pytest.mark.filterwarnings("ignore:Argument \"writer_name\":PendingDeprecationWarning")
def test_report_opens_with_an_introduction_naming_the_controls():
    import jinja2
    import yaml
    from docutils.core import publish_parts

    snakefile = (ROOT / "Snakefile").read_text()
    assert 'report: "workflow/report/workflow.rst"' in snakefile
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    text = (ROOT / "workflow" / "report" / "workflow.rst").read_text()
    rendered = jinja2.Template(text).render(snakemake=types.SimpleNamespace(config=config))
    html = publish_parts(rendered, writer_name="html", settings_overrides={"report_level": 2})["html_body"]
    assert "system-message" not in html
    for name, spec in config["models"].items():
        assert (spec.get("kind", "pretrained") != "pretrained") == (f">{name}<" in html), name
    assert "How to read this report" in html and "untrained" in html
    # every caption renders cleanly too (a stray |x| is an undefined rst substitution)
    for path in sorted((ROOT / "workflow" / "report").glob("*.rst")):
        rendered = jinja2.Template(path.read_text()).render(
            snakemake=types.SimpleNamespace(config=config))
        html = publish_parts(rendered, writer_name="html",
                             settings_overrides={"report_level": 2, "halt_level": 5})["html_body"]
        assert "system-message" not in html, path.name
