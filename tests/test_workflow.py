"""The workflow as a user runs it: the real snakemake CLI, on the real rule files."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from avprobe import io
from workflow_cli import ROOT, copy_workflow, run_snakemake

TINY_CONFIG = ROOT / "tests" / "data" / "tiny_config.yaml"


def planned_rules(dry_run_stdout: str) -> set[str]:
    """Rule names of the jobs a dry run plans (local or not), without the target rule."""
    found = re.findall(r"^\s*(?:local)?rule (\w+):\s*$", dry_run_stdout, re.M)
    return set(found) - {"all"}


def test_lint_is_clean():
    proc = run_snakemake("--lint", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "lints for" not in out.lower(), out


def test_default_dry_run_plans_every_stage():
    rules = planned_rules(run_snakemake("-n", "--quiet", "rules").stdout + run_snakemake("-n").stdout)
    for rule in (
        "make_pseudowords",
        "synthesize_pseudowords",
        "render_shapes",
        "compose_scenes",
        "speak_captions",
        "build_untrained_model",
        "extract_embeddings",
        "symbolism",
        "rsa",
        "probe",
        "retrieval",
        "summary",
        "figure_symbolism_auc",
        "figure_rsa_layers",
        "figure_probe_layers",
        "figure_retrieval_recall",
        "figure_stimulus_montage",
        "assemble_qc_recogniser",
        "speech_qc_transcribe",
        "speech_qc",
    ):
        assert rule in rules, f"{rule} missing from the default plan: {sorted(rules)}"
    # The offline default needs no hub: nothing to prefetch.
    assert "prefetch_model" not in rules and "prefetch_models" not in rules


def test_paper_config_plans_pretrained_models_behind_prefetch():
    out = run_snakemake("-n", "--configfile", "config/paper.yaml").stdout
    rules = planned_rules(out)
    assert "prefetch_model" in rules
    for model in ("hubert-base", "clip-b32", "clap-htsat", "whisper-base-encoder", "dinov2-small"):
        assert f"results/embeddings/" in out and f"/{model}.parquet" in out, model
        assert f"results/models/prefetched/{model}.json" in out, model  # each model its own fetch
    # one model asked for: only its own weights are fetched
    one = run_snakemake("-n", "results/embeddings/pseudoword_text/bert-base.parquet",
                        "--configfile", "config/paper.yaml").stdout
    assert "results/models/prefetched/bert-base.json" in one
    assert "results/models/prefetched/hubert-base.json" not in one


@pytest.mark.parametrize(
    "override, expected",
    [
        ("models: {bad: {family: not_a_family, towers: [audio]}}", "family"),
        ("models: {bad: {family: logmel, towers: [smell]}}", "towers"),
        ("stimuli: {shapes: {per_class: many}}", "per_class"),
        ("analysis: {symbolism: [{model: nope, words: pseudoword_text, images: shapes}]}", "nope"),
        ("analysis: {symbolism: [{model: logmel, words: pseudoword_text, images: shapes}]}", "towers"),
        ("analysis: {rsa: {covariate_model: spectrogram}}", "covariate_model: unknown model 'spectrogram'"),
        ("analysis: {dense: {models: [hubert-untrained]}}", "no patch features"),
        ("analysis: {dense: {models: [clip-untrained], min_coverage: 2}}", "min_coverage"),
        ("models: {hubert-untrained: {source: resources/model_configs/hubert-tny}}",
         "models.hubert-untrained.source: 'resources/model_configs/hubert-tny' is not an architecture config folder"),
        ("models: {h: {family: hf_audio, source: /no/such/folder, towers: [audio]}}",
         "models.h.source: the local path '/no/such/folder' does not exist"),
        ("models: {hubert-untrained: {family: hf_audoi}}", "'hf_audoi' is not allowed (did you mean 'hf_audio'?)"),
        ("models: {hubert-untrained: {n_mels: 64}}", "unknown key 'n_mels'"),
        ("analysis: {symbolism: [{model: hubert-untrained, words: pseudowords, images: shapes}]}",
         "has towers ['audio'] but this needs ['audio', 'image']"),
        ("models: {clap-untrained: {family: clap, kind: untrained, source: resources/model_configs/clap-tiny, "
         "towers: [audio, text]}}\nanalysis: {symbolism: [{model: clap-untrained, words: pseudowords, "
         "images: shapes}]}", "has towers ['audio', 'text'] but this needs"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, override, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(override + "\n")
    proc = run_snakemake("-n", "--configfile", str(bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expected in out
    assert "Job stats" not in out


# tiny_run (one full run of the tiny study, shared by the session): tests/conftest.py


def test_tiny_run_stimuli(tiny_run):
    words = pd.read_parquet(tiny_run / "results/stimuli/pseudoword_text/manifest.parquet")
    clips = pd.read_parquet(tiny_run / "results/stimuli/pseudowords/manifest.parquet")
    regular = words[~words["is_reference"]]
    assert (regular["label"].value_counts() == 6).all()
    assert set(words.loc[words["is_reference"], "word"]) == {"kiki", "bouba"}
    # one clip per word × voice, each a real file
    assert len(clips) == words["word"].nunique() * 2
    for rel in clips["path"]:
        assert (tiny_run / "results/stimuli/pseudowords" / rel).stat().st_size > 1000
    shapes = pd.read_parquet(tiny_run / "results/stimuli/shapes/manifest.parquet")
    assert shapes["label"].value_counts().to_dict() == {"sharp": 8, "round": 8}
    captions = pd.read_parquet(tiny_run / "results/stimuli/captions/manifest.parquet")
    assert len(captions) == 12 * 5
    assert captions.groupby("image_id")["text"].nunique().eq(5).all()


def test_tiny_run_embeddings_cover_stimuli_times_layers(tiny_run):
    for path in sorted((tiny_run / "results/embeddings").glob("*/*.parquet")):
        set_name = path.parent.name
        manifest = pd.read_parquet(tiny_run / f"results/stimuli/{set_name}/manifest.parquet")
        layers = io.embedding_layers(path)
        table = pd.read_parquet(path, columns=["stimulus_id", "layer"])
        assert len(table) == len(manifest) * len(layers), path
        for _, ids in table.groupby("layer")["stimulus_id"]:
            assert sorted(ids) == sorted(manifest["stimulus_id"])
        meta = io.embeddings_metadata(path)
        assert meta["model"] == path.stem
        if path.stem.endswith("-untrained"):
            assert meta["kind"] == "untrained"


def test_tiny_run_analyses_are_in_range(tiny_run):
    tables = tiny_run / "results/tables"
    sym = pd.concat(
        pd.read_parquet(p) for p in tables.glob("symbolism/*.parquet") if not p.name.endswith(".scores.parquet")
    )
    auc = sym[sym["metric"] == "auc"]
    assert len(auc) and auc["value"].between(0, 1).all()
    assert (auc["ci_low"] <= auc["value"]).all() and (auc["value"] <= auc["ci_high"]).all()
    assert auc["p"].between(0, 1).all()

    for npz in tables.glob("rsa/*/*.rdms.npz"):
        with np.load(npz) as rdms:
            for key in rdms.files:
                if key == "labels" or rdms[key].ndim != 2:
                    continue
                rdm = rdms[key]
                assert np.allclose(rdm, rdm.T)
                assert np.allclose(np.diag(rdm), 0)
    rsa = pd.concat(pd.read_parquet(p) for p in tables.glob("rsa/*/*.parquet"))
    assert rsa["value"].between(-1, 1).all()

    probe = pd.concat(pd.read_parquet(p) for p in tables.glob("probe/*/*.parquet"))
    acc = probe[probe["metric"].isin(["accuracy", "balanced_accuracy"])]
    assert len(acc) and acc["value"].between(0, 1).all()

    ret = pd.concat(pd.read_parquet(p) for p in tables.glob("retrieval/*.parquet"))
    wer = ret[ret["metric"] == "wer"]  # the cascade's row: the untrained recogniser's transcripts
    assert len(wer) == 1 and wer.iloc[0]["mode"] == "cascade" and wer.iloc[0]["value"] > 0.5
    ret = ret[ret["metric"].str.startswith("R@")]
    by_k = ret.pivot_table(index=["model", "mode", "direction", "layer"], columns="metric", values="value")
    assert ((by_k["R@1"] <= by_k["R@5"]) & (by_k["R@5"] <= by_k["R@10"])).all()


def test_tiny_run_figures_and_report(tiny_run):
    for stem in ("stimulus_montage", "symbolism_auc", "rsa_layers", "rsa_partial", "probe_layers",
                 "retrieval_recall", "dense_heatmaps"):
        pdf = tiny_run / f"results/figures/{stem}.pdf"
        png = tiny_run / f"results/figures/{stem}.png"
        assert pdf.read_bytes().startswith(b"%PDF")
        assert png.read_bytes().startswith(b"\x89PNG")
    run_snakemake("--configfile", "tiny_config.yaml", "--report", "results/report.html", cwd=tiny_run)
    html = (tiny_run / "results/report.html").read_text(errors="replace")
    assert "symbolism_auc" in html and "rsa_layers" in html
    summary = (tiny_run / "results/tables/summary.md").read_text()
    assert "untrained" in summary
    # the speech QC: a real recogniser's per-voice table, in the summary and the report
    voices = pd.read_parquet(tiny_run / "results/tables/speech_qc/voices.parquet")
    assert voices["voice"].tolist() == ["us_m1", "gb_f2"] and (voices["n_captions"] == 1).all()
    assert not voices["excluded"].any()  # tiny_config's bar (50) excludes nothing
    assert "## Speech QC" in summary and "voices.html" in html


def test_tiny_run_editing_a_figure_reruns_only_that_figure(tiny_run):
    script = tiny_run / "workflow/scripts/figure.py"
    script.write_text(script.read_text() + "\n# edited\n")
    out = run_snakemake("-n", "--configfile", "tiny_config.yaml", cwd=tiny_run).stdout
    rules = planned_rules(out) - {"provenance"}  # provenance hashes every output, figures too
    assert rules and all(r.startswith("figure_") for r in rules), rules
    assert "extract_embeddings" not in rules


def test_a_configured_corpus_joins_the_plan_and_a_broken_one_fails_at_parse(tmp_path):
    from test_stimuli import flickr8k as flickr8k_fixture

    corpus = flickr8k_fixture.__wrapped__(tmp_path)
    good = tmp_path / "corpus.yaml"
    good.write_text(
        yaml.safe_dump(
            {
                "stimuli": {"corpora": {"flickr8k": corpus}},
                "analysis": {
                    "retrieval": [
                        {"name": "flickr_text", "mode": "text", "model": "clip-untrained",
                         "queries": "flickr8k_caption_text", "gallery": "flickr8k_images"}
                    ]
                },
            }
        )
    )
    out = run_snakemake("-n", "--configfile", str(good)).stdout
    rules = planned_rules(out)
    assert "import_corpus" in rules
    assert "results/embeddings/flickr8k_images/clip-untrained.parquet" in out
    # no analysis reads the spoken captions: not embedded unless a model entry asks for them
    assert "results/embeddings/flickr8k_captions/hubert-untrained.parquet" not in out
    assert "results/tables/retrieval/flickr_text.parquet" in out
    asked = yaml.safe_load(good.read_text())
    asked["models"] = {"hubert-untrained": {"sets": ["flickr8k_captions"]}}
    good.write_text(yaml.safe_dump(asked))
    assert "results/embeddings/flickr8k_captions/hubert-untrained.parquet" in run_snakemake(
        "-n", "--configfile", str(good)).stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"stimuli": {"corpora": {"flickr8k": {**corpus, "captions_file": "/nope.txt"}}}}))
    proc = run_snakemake("-n", "--configfile", str(broken), check=False)
    assert proc.returncode != 0
    assert "stimuli.corpora.flickr8k.captions_file" in proc.stdout + proc.stderr


@pytest.mark.skipif(any(shutil.which(t) for t in ("conda", "mamba", "micromamba")), reason="conda is installed here")
def test_use_conda_without_conda_points_to_the_pip_route():
    proc = run_snakemake("-n", "--use-conda", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "--use-conda was given but no conda, mamba or micromamba is on PATH" in out
    assert "pip install -r requirements.txt" in out and "Job stats" not in out
