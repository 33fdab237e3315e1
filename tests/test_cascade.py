"""Seed 003's cascade: spoken captions → Whisper ASR → transcript set → text tower ↔ image tower.

A tiny *untrained* Whisper (resources/model_configs/whisper-tiny-random) transcribes a few clips
through the library function the `transcribe` rule calls; its transcripts are noise (WER ≈ 100 %),
which is the honest floor of the cascade, so the tests check the plumbing: ids, columns, the
WER row, the plan and the DAG, not transcript quality.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from avprobe import io, plan
from avprobe.analysis import retrieval
from avprobe.sets import ASR_SETS, SET_MODALITY
from workflow_cli import clean_workflow

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "resources" / "model_configs"
SCRIPTS = ROOT / "workflow" / "scripts"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


class _Named(SimpleNamespace):
    def get(self, key, default=None):
        return getattr(self, key, default)


# ------------------------------------------------------------------------------------------------
# Fixtures: a tiny spoken caption set and the scenes it describes
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """captions (4 clips, one at 22.05 kHz), caption_text and scenes (2 images)."""
    sf = pytest.importorskip("soundfile")
    from PIL import Image

    root = tmp_path_factory.mktemp("cascade")
    rng = np.random.default_rng(3)
    texts = ["a red ball", "a blue cube on the left", "two green stars", "a small yellow ring"]
    (root / "captions" / "audio").mkdir(parents=True)
    rows = []
    for i, (text, rate) in enumerate(zip(texts, [16000, 16000, 22050, 16000])):
        n = int((0.6 + 0.2 * i) * rate)
        t = np.arange(n) / rate
        wave = (0.2 * np.sin(2 * np.pi * (180 + 60 * i) * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)
        rel = f"audio/cap{i}.wav"
        sf.write(root / "captions" / rel, wave, rate, subtype="FLOAT")
        rows.append({"stimulus_id": f"scene{i // 2}-cap{i % 2}", "path": rel, "image_id": f"scene{i // 2}",
                     "text": text, "voice": ["us_m1", "gb_f2"][i % 2], "sample_rate": rate,
                     "duration": n / rate})
    captions = pd.DataFrame(rows)
    captions.to_parquet(root / "captions" / "manifest.parquet", index=False)
    (root / "caption_text").mkdir()
    captions[["stimulus_id", "image_id", "text"]].to_parquet(root / "caption_text" / "manifest.parquet",
                                                              index=False)
    (root / "scenes" / "images").mkdir(parents=True)
    scene_rows = []
    for j in range(2):
        rel = f"images/scene{j}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "scenes" / rel)
        scene_rows.append({"stimulus_id": f"scene{j}", "path": rel})
    pd.DataFrame(scene_rows).to_parquet(root / "scenes" / "manifest.parquet", index=False)
    return root


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    pytest.importorskip("transformers")
    from avprobe.models.build import build_untrained

    return build_untrained(CONFIGS / "whisper-tiny-random", tmp_path_factory.mktemp("w") / "whisper", seed=0)


ASR_SPEC = {"family": "whisper_asr", "kind": "untrained", "source": "resources/model_configs/whisper-tiny-random",
            "towers": ["audio"], "batch_size": 3, "max_new_tokens": 12}


@pytest.fixture(scope="module")
def transcripts(spoken, whisper):
    """The transcript set, written by the transcribe rule's entry script."""
    out = spoken / "caption_asr" / "manifest.parquet"
    log = spoken / "logs" / "transcribe.log"
    snakemake = SimpleNamespace(
        input=_Named(manifest=str(spoken / "captions" / "manifest.parquet"),
                     model_dir=str(whisper)),
        output=_Named(manifest=str(out)),
        params=_Named(model="whisper-untrained", spec=ASR_SPEC),
        log=[str(log)], threads=1,
    )
    runpy.run_path(str(SCRIPTS / "transcribe.py"), init_globals={"snakemake": snakemake})
    return out


# ------------------------------------------------------------------------------------------------
# The transcript set
# ------------------------------------------------------------------------------------------------


def test_transcript_set_is_a_text_set_of_the_spoken_captions():
    assert ASR_SETS == {"caption_asr": "captions", "pseudoword_asr": "pseudowords"}
    assert SET_MODALITY["caption_asr"] == "text" and SET_MODALITY["captions"] == "audio"
    assert SET_MODALITY["pseudoword_asr"] == "text"


def test_transcribe_writes_the_caption_asr_manifest(spoken, whisper, transcripts):
    from avprobe.cascade import ASR_COLUMNS, transcribe_set
    from avprobe.models.asr import transcribe

    captions = pd.read_parquet(spoken / "captions" / "manifest.parquet")
    asr = io.read_manifest(transcripts)
    # same ids, same order, same images as the spoken captions (and so as caption_text)
    assert asr["stimulus_id"].tolist() == captions["stimulus_id"].tolist()
    assert asr["image_id"].tolist() == captions["image_id"].tolist()
    assert list(asr.columns[: len(ASR_COLUMNS)]) == list(ASR_COLUMNS)
    assert asr["reference_text"].tolist() == captions["text"].tolist()
    assert (asr["text"] == asr["asr_text"]).all() and (asr["asr_model"] == "whisper-untrained").all()
    assert asr["voice"].tolist() == captions["voice"].tolist()
    assert all(isinstance(t, str) and "<|" not in t for t in asr["text"])
    # the transcripts are Whisper's greedy generate output for each clip (the library call)
    from avprobe.extract import load_audio

    waves = [load_audio(spoken / "captions" / p) for p in captions["path"]]
    assert asr["text"].tolist() == transcribe(ASR_SPEC, whisper, waves, device="cpu")
    # provenance: an untrained recogniser, labelled so, with the corpus WER
    meta = io.embeddings_metadata(transcripts)
    assert meta["kind"] == "untrained" and meta["asr_model"] == "whisper-untrained"
    assert meta["revision"].startswith("local:") and meta["n_items"] == 4
    assert meta["wer"] == pytest.approx(retrieval.word_error_rate(asr["reference_text"], asr["asr_text"]))
    # an untrained recogniser's transcripts are noise: nearly every word is wrong
    assert meta["wer"] > 0.9
    assert "corpus WER" in (spoken / "logs" / "transcribe.log").read_text()
    # deterministic: the library function called again writes the same bytes (the transcript
    # set is a stimulus set, which two runs must reproduce bit for bit)
    again = transcribe_set(spoken / "captions" / "manifest.parquet", spoken / "again.parquet",
                           "whisper-untrained", ASR_SPEC, model_dir=whisper, device="cpu")
    pd.testing.assert_frame_equal(again, asr[again.columns.tolist()], check_dtype=False)
    assert (spoken / "again.parquet").read_bytes() == transcripts.read_bytes()


def test_cascade_retrieval_end_to_end_with_a_wer_row(spoken, transcripts, tmp_path):
    """caption_asr → CLIP-tiny text tower ↔ image tower: R@K both ways plus the WER row."""
    from avprobe.extract import extract_embeddings
    from avprobe.models.build import build_untrained
    from avprobe.validate import rejected_path

    clip = build_untrained(CONFIGS / "clip-tiny", tmp_path / "clip", seed=0)
    spec = {"family": "clip", "kind": "untrained", "towers": ["text", "image"], "layers": ["joint"]}
    q_emb, g_emb = tmp_path / "caption_asr.parquet", tmp_path / "scenes.parquet"
    extract_embeddings(transcripts, "caption_asr", "clip-untrained", spec, q_emb, model_dir=clip,
                       rejected_path=rejected_path(q_emb))
    extract_embeddings(spoken / "scenes" / "manifest.parquet", "scenes", "clip-untrained", spec, g_emb,
                       model_dir=clip, rejected_path=rejected_path(g_emb))
    table = retrieval.run_retrieval(transcripts, q_emb, spoken / "scenes" / "manifest.parquet", g_emb,
                                    tmp_path / "table.parquet", name="clip-untrained_cascade", mode="cascade",
                                    model="clip-untrained", queries="caption_asr", gallery="scenes",
                                    n_bootstrap=20)
    assert (table["mode"] == "cascade").all() and (table["set"] == "caption_asr").all()
    assert {"speech→image", "image→speech", "asr"} == set(table["direction"])
    wer = table[table["metric"] == "wer"]
    assert len(wer) == 1
    asr = pd.read_parquet(transcripts)
    # the reference is the spoken caption (reference_text), not the transcript in `text`
    assert wer.iloc[0]["value"] == pytest.approx(retrieval.word_error_rate(asr["reference_text"], asr["text"]))
    assert wer.iloc[0]["value"] > 0.9 and wer.iloc[0]["n"] == 4
    recall = table[table["metric"].str.startswith("R@")]
    assert recall["value"].between(0, 1).all() and set(recall["layer"]) == {"joint"}


def test_wer_reads_reference_text_when_text_is_the_transcript(tmp_path):
    n_img = 4
    gm = pd.DataFrame({"stimulus_id": [f"img{i}" for i in range(n_img)]})
    qm = pd.DataFrame({"stimulus_id": [f"cap{i}" for i in range(2 * n_img)],
                       "image_id": [f"img{i // 2}" for i in range(2 * n_img)],
                       "text": ["a red bowl"] * (2 * n_img), "asr_text": ["a red bowl"] * (2 * n_img),
                       "reference_text": ["a red ball"] * (2 * n_img)})
    gm.to_parquet(tmp_path / "g.parquet")
    qm.to_parquet(tmp_path / "q.parquet")
    rng = np.random.default_rng(0)
    io.write_embeddings([("joint", 0, (list(gm["stimulus_id"]), rng.normal(size=(n_img, 6))))],
                        tmp_path / "ge.parquet", {})
    io.write_embeddings([("joint", 0, (list(qm["stimulus_id"]), rng.normal(size=(2 * n_img, 6))))],
                        tmp_path / "qe.parquet", {})
    t = retrieval.run_retrieval(tmp_path / "q.parquet", tmp_path / "qe.parquet", tmp_path / "g.parquet",
                                tmp_path / "ge.parquet", name="c", mode="cascade", model="m",
                                queries="caption_asr", gallery="scenes", n_bootstrap=10)
    assert t.query("metric == 'wer'").iloc[0]["value"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------
# The plan
# ------------------------------------------------------------------------------------------------


def _config(asr=None, retrieval_entries=(), extra_models=None):
    models = {
        "clip-untrained": {"family": "clip", "kind": "untrained", "source": "x", "towers": ["text", "image"]},
        "hubert-untrained": {"family": "hf_audio", "kind": "untrained", "source": "x", "towers": ["audio"]},
        "whisper-untrained": {"family": "whisper_asr", "kind": "untrained", "source": "x", "towers": ["audio"]},
        **(extra_models or {}),
    }
    return {"models": models, "asr": {"model": asr},
            "analysis": {"symbolism": [], "retrieval": list(retrieval_entries)}}


def test_plan_embeds_transcripts_only_when_asr_is_configured_and_read():
    cascade = {"name": "c", "mode": "cascade", "model": "clip-untrained", "gallery": "scenes"}
    without = plan.extractions(_config(retrieval_entries=[cascade]))
    assert not any(e.set in ASR_SETS for e in without)
    # configured but read by no analysis: nothing is transcribed or embedded
    assert not any(e.set in ASR_SETS for e in plan.extractions(_config(asr="whisper-untrained")))
    with_asr = plan.extractions(_config(asr="whisper-untrained", retrieval_entries=[cascade]))
    assert [e.model for e in with_asr if e.set == "caption_asr"] == ["clip-untrained"]
    assert not any(e.set == "pseudoword_asr" for e in with_asr)
    config = _config(asr="whisper-untrained")
    config["analysis"]["symbolism"] = [{"model": "clip-untrained", "words": "pseudoword_asr", "images": "shapes"}]
    assert [(e.set, e.model) for e in plan.extractions(config) if e.set in ASR_SETS] == [
        ("pseudoword_asr", "clip-untrained")]
    # a recogniser embeds nothing, not even the audio sets its tower names
    assert not any(e.model == "whisper-untrained" for e in with_asr + without)
    assert plan.asr_model({"models": {}}) is None


@pytest.mark.parametrize(
    "asr, entry, message",
    [
        (None, {"mode": "cascade", "model": "clip-untrained"}, "asr.model"),
        ("whisper-untrained", {"mode": "cascade", "model": "clip-untrained", "queries": "caption_text"},
         "does not fit"),
        ("whisper-untrained", {"mode": "text", "model": "clip-untrained", "queries": "caption_asr"},
         "does not fit"),
        ("whisper-untrained", {"mode": "end_to_end", "model": "clip-untrained"}, "audio"),
        ("whisper-untrained", {"mode": "fusion", "model": "clip-untrained", "queries": "captions"}, "fusion"),
        ("whisper-untrained", {"mode": "fusion", "model": "clip-untrained"}, "audio"),
        ("nope", {"mode": "text", "model": "clip-untrained"}, "asr.model: unknown model 'nope'"),
        ("clip-untrained", {"mode": "text", "model": "clip-untrained"}, "Whisper"),
    ],
)
def test_plan_rejects_inconsistent_cascade_configs(asr, entry, message):
    config = _config(asr, [{"name": "r", "gallery": "scenes", **entry}])
    with pytest.raises(plan.ConfigError, match=re.escape(message)):
        plan.check(config)


def test_plan_retrieval_queries_default_by_mode():
    assert plan.retrieval_queries({"mode": "cascade"}) == ["caption_asr"]
    assert plan.retrieval_queries({"mode": "text"}) == ["caption_text"]
    assert plan.retrieval_queries({"mode": "end_to_end"}) == ["captions"]
    assert plan.retrieval_queries({"mode": "fusion"}) == ["captions", "caption_asr"]
    assert plan.retrieval_entry({"mode": "cascade", "queries": "caption_asr"})["queries"] == "caption_asr"
    # the WER row needs the transcript manifest (reference and hypothesis)
    assert plan.retrieval_manifest_set(["captions", "caption_asr"]) == "caption_asr"
    config = _config("whisper-untrained", [{"name": "f", "mode": "fusion", "model": "av", "gallery": "scenes"}],
                     {"av": {"family": "mylab.plugin:load", "towers": ["audio", "text", "image"],
                             "spaces": [{"name": "avt", "towers": ["audio", "text", "image"], "layer": "joint"}]}})
    plan.check(config)  # a model with the three towers in one space can fuse speech and transcripts
    del config["models"]["av"]["spaces"]
    with pytest.raises(plan.ConfigError, match="no shared space"):
        plan.check(config)  # without a declared space its towers are not comparable


# ------------------------------------------------------------------------------------------------
# The DAG (snakemake dry runs of the real rule files)
# ------------------------------------------------------------------------------------------------


def dry_run(*args: str) -> str:
    proc = subprocess.run([SNAKEMAKE, "-n", *args], cwd=clean_workflow(), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def job_counts(out: str) -> dict[str, int]:
    block = out.split("Job stats:", 1)[1].split("Reasons:", 1)[0] if "Job stats:" in out else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def rule_block(out: str, rule: str, output: str) -> str:
    for block in out.split("\n\n"):
        if f"rule {rule}:" in block and output in block:
            return block
    raise AssertionError(f"no {rule} job for {output}")


def test_default_dry_run_transcribes_and_retrieves_with_transcripts():
    out = dry_run()
    counts = job_counts(out)
    assert counts.get("transcribe") == 1
    assert "results/embeddings/caption_asr/clip-untrained.parquet" in out
    block = rule_block(out, "transcribe", "results/stimuli/caption_asr/manifest.parquet")
    assert "results/stimuli/captions/manifest.parquet" in block
    assert "results/models/whisper-untrained" in block
    cascade = rule_block(out, "retrieval", "results/tables/retrieval/clip-untrained_cascade.parquet")
    assert "results/stimuli/caption_asr/manifest.parquet" in cascade
    assert "results/embeddings/caption_asr/clip-untrained.parquet" in cascade
    # the recogniser itself embeds nothing
    assert "results/embeddings/captions/whisper-untrained.parquet" not in out
    # no sharded model in the default: no shard or merge jobs
    assert "extract_embedding_shard" not in counts and "merge_embedding_shards" not in counts


def test_dry_run_without_asr_plans_no_transcripts(tmp_path):
    override = tmp_path / "no_asr.yaml"
    override.write_text("asr: {model: null}\nanalysis:\n  retrieval:\n"
                        "    - {name: t, mode: text, model: clip-untrained, gallery: scenes}\n")
    out = dry_run("--configfile", str(override))
    assert "transcribe" not in job_counts(out) and "caption_asr" not in out


def test_dry_run_wires_fusion_to_two_query_files(tmp_path):
    override = tmp_path / "fusion.yaml"
    override.write_text(
        "models:\n  av: {family: 'mylab.plugin:load', kind: baseline, towers: [audio, text, image],\n"
        "       spaces: [{name: avt, towers: [audio, text, image]}]}\n"
        "analysis:\n  retrieval:\n    - {name: av_fusion, mode: fusion, model: av, gallery: scenes}\n")
    out = dry_run("results/tables/retrieval/av_fusion.parquet", "--configfile", str(override))
    block = rule_block(out, "retrieval", "results/tables/retrieval/av_fusion.parquet")
    for path in ("results/embeddings/captions/av.parquet", "results/embeddings/caption_asr/av.parquet",
                 "results/stimuli/caption_asr/manifest.parquet", "results/embeddings/scenes/av.parquet"):
        assert path in block, path
