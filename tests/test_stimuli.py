"""The stimulus stage with known answers: inventory counts, real espeak audio, images, captions."""

from __future__ import annotations

import hashlib
import json
import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from PIL import Image

from avprobe.io import read_manifest, resolve_stimulus_path
from avprobe.stimuli import audio, pseudowords, scenes, shapes, speech, tts

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
STIMULI_CFG = yaml.safe_load((ROOT / "config.yaml").read_text())["stimuli"]
PSEUDO_CFG = STIMULI_CFG["pseudowords"]
TTS_CFG = STIMULI_CFG["tts"]
TWO_VOICES = {**TTS_CFG, "voices": [TTS_CFG["voices"][0], TTS_CFG["voices"][3]]}  # us_m1, gb_f4


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- pseudowords -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def words() -> pd.DataFrame:
    return pseudowords.inventory(PSEUDO_CFG)


def test_inventory_is_the_648_word_set_of_alper_and_averbuch_elor(words):
    regular = words[~words["is_reference"]]
    assert len(regular) == 648
    assert regular["label"].value_counts().to_dict() == {"sharp": 324, "round": 324}
    assert regular["word"].is_unique
    consonants, vowels = "".join(PSEUDO_CFG["consonants"]), "".join(PSEUDO_CFG["vowels"])
    shape = re.compile(rf"^([{consonants}])([{vowels}])[{consonants}][{vowels}]\1\2$")
    sharp, round_ = set(PSEUDO_CFG["sharp_sounds"]), set(PSEUDO_CFG["round_sounds"])
    for word, label in zip(regular["word"], regular["label"]):
        assert shape.match(word), word
        letters = set(word)
        if label == "sharp":
            assert letters & sharp and not letters & round_, word
        else:
            assert letters & round_ and not letters & sharp, word
    # mixed words are exactly the ones left out: 12·5·12·5 candidates in all
    assert len(pseudowords.candidate_words(PSEUDO_CFG)) == 3600


def test_references_features_and_transcriptions(words):
    refs = words[words["is_reference"]].set_index("word")
    assert refs["label"].to_dict() == {"kiki": "sharp", "bouba": "round"}
    assert refs.loc["bouba", "ipa"] == "buba"
    assert refs.loc["bouba", "espeak"] == "[[b'u:bA:]]"
    assert refs.loc["kiki", "ipa"] == "kiki"
    kikaki = words.set_index("word").loc["kikaki"]
    assert (kikaki["n_sharp"], kikaki["n_round"], kikaki["n_neutral"]) == (5, 0, 1)
    assert kikaki["sharpness"] == pytest.approx(5 / 6)
    assert words.set_index("word").loc["bobabo", "sharpness"] == pytest.approx(-5 / 6)
    assert pseudowords.ipa_transcription("gaxaga") == "ɡaxaɡa"
    # the sign of the weighted score follows the label
    regular = words[~words["is_reference"]]
    assert (np.sign(regular["sharpness"]) == regular["label"].map({"sharp": 1, "round": -1})).all()


def test_words_per_class_draws_a_seeded_balanced_subset():
    cfg = {**PSEUDO_CFG, "words_per_class": 10}
    a, b = pseudowords.inventory(cfg, seed=1), pseudowords.inventory(cfg, seed=1)
    other = pseudowords.inventory(cfg, seed=2)
    assert a.equals(b)
    assert set(a["word"]) != set(other["word"])
    assert a.loc[~a["is_reference"], "label"].value_counts().to_dict() == {"sharp": 10, "round": 10}
    assert set(a.loc[a["is_reference"], "word"]) == {"kiki", "bouba"}


def test_text_manifest_ids_and_templates(words):
    manifest = pseudowords.text_manifest(words, ["{word}", "a {word} shape"])
    assert len(manifest) == 2 * len(words)
    row = manifest.set_index("stimulus_id").loc["kikaki-t1"]
    assert (row["word"], row["text"], row["label"]) == ("kikaki", "a kikaki shape", "sharp")
    assert manifest.set_index("stimulus_id").loc["bouba-t0", "text"] == "bouba"
    assert {"template", "sharpness", "n_sharp", "n_round", "n_neutral", "ipa", "is_reference"} <= set(manifest)


# --- audio post-processing -------------------------------------------------------------


def test_postprocessing_trims_normalises_and_never_clips():
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(rate // 2) / rate)
    padded = np.concatenate([np.zeros(rate), tone, np.zeros(rate)]).astype(np.float32)
    trimmed = audio.trim_silence(padded, rate, threshold_db=-40, margin_ms=20)
    assert abs(trimmed.size - (tone.size + 2 * 320)) <= 2
    scaled, _, limited = audio.normalise_loudness(trimmed, -20.0)
    assert not limited and audio.clip_stats(scaled, rate)["rms_dbfs"] == pytest.approx(-20.0, abs=1e-3)
    spike = np.zeros(rate, np.float32)
    spike[100] = 1.0  # crest factor 42 dB: reaching -20 dBFS RMS would clip
    scaled, _, limited = audio.normalise_loudness(spike, -20.0, peak_limit_dbfs=-1.0)
    assert limited and np.abs(scaled).max() <= 10 ** (-1 / 20) + 1e-6


# --- espeak --------------------------------------------------------------------------------


def test_espeak_phoneme_input_says_buba_and_text_input_does_not():
    engine = tts.get_engine("espeak")
    assert engine.native_sample_rate == 22050
    voice = tts.Voice.from_config(TTS_CFG["voices"][0])
    forced = engine.synthesize(voice, "[[b'u:bA:]]", "phonemes").phonemes
    spelled = engine.synthesize(voice, "bouba", "text").phonemes
    assert re.fullmatch(r"bˈ?uːbɑː", forced), forced
    assert "aʊ" in spelled  # espeak's English rules read the spelling as /baʊbə/
    assert engine.resolve_voice("en-gb") == "gmw/en"
    with pytest.raises(ValueError, match="variant"):
        engine.synthesize(tts.Voice("x", "espeak", "en-us", "no_such_variant"), "hello")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory, words):
    """2 words × 2 voices, synthesised twice: with 2 workers, then with 1."""
    pair = words[words["word"].isin(["kiki", "bouba"])]
    out = []
    for threads in (2, 1):
        root = tmp_path_factory.mktemp(f"speech{threads}")
        manifest = speech.synthesize_pseudowords(
            pair, TWO_VOICES, root / "manifest.parquet", root / "audio", threads
        )
        out.append((root, manifest))
    return out


def test_pseudoword_clips_are_real_normalised_16k_float_wavs(spoken):
    root, _ = spoken[0]
    manifest = read_manifest(root / "manifest.parquet")
    assert len(manifest) == 4
    assert set(manifest["stimulus_id"]) == {"kiki-us_m1", "kiki-gb_f4", "bouba-us_m1", "bouba-gb_f4"}
    assert manifest.set_index("stimulus_id").loc["bouba-gb_f4", "path"] == "audio/bouba-gb_f4.wav"
    assert manifest["is_reference"].all() and set(manifest["engine"]) == {"espeak"}
    for row in manifest.itertuples():
        path = resolve_stimulus_path(root / "manifest.parquet", row.path)
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "FLOAT")
        x, rate = sf.read(path, dtype="float32")
        assert 0.25 < x.size / rate < 2.0
        assert row.duration == pytest.approx(x.size / rate)
        rms_db = 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        assert rms_db == pytest.approx(TTS_CFG["target_rms_dbfs"], abs=0.5)
        assert np.abs(x).max() < 1.0
        # trimmed: the first and last loud samples are within the margin (20 ms) of the ends
        loud = np.flatnonzero(np.abs(x) >= np.abs(x).max() * 10 ** (-40 / 20))
        assert loud[0] <= 0.021 * rate and x.size - 1 - loud[-1] <= 0.021 * rate
    assert manifest.set_index("stimulus_id").loc["bouba-us_m1", "spoken_ipa"].replace("ˈ", "") == "buːbɑː"


def test_synthesis_is_byte_identical_and_voices_differ(spoken):
    (root2, m2), (root1, m1) = spoken
    for rel in m2["path"]:
        assert sha(root2 / rel) == sha(root1 / rel), rel
    assert sha(root2 / "audio/kiki-us_m1.wav") != sha(root2 / "audio/kiki-gb_f4.wav")
    durations = m2.set_index("stimulus_id")["duration"]
    assert durations["kiki-us_m1"] != durations["kiki-gb_f4"]


def test_full_scale_pseudoword_plan_has_3888_word_clips(words):
    plan = speech.pseudoword_clip_plan(words, TTS_CFG)
    assert len(TTS_CFG["voices"]) == 6
    assert (~plan["is_reference"]).sum() == 648 * 6 == 3888
    assert len(plan) == 650 * 6 and plan["stimulus_id"].is_unique
    assert plan.set_index("stimulus_id").loc["kikaki-gb_f4", "spoken"] == "[[k'i:kA:ki:]]"
    text_plan = speech.pseudoword_clip_plan(words, {**TTS_CFG, "input": "text"})
    assert text_plan.set_index("stimulus_id").loc["bouba-us_m1", "spoken"] == "bouba"


# --- shapes ------------------------------------------------------------------------------


def test_full_scale_shape_plan_is_balanced_and_sharpness_separates_classes():
    plan = shapes.shape_plan(STIMULI_CFG["shapes"], seed=0)
    assert len(plan) == 500 and plan["stimulus_id"].is_unique
    assert plan["label"].value_counts().to_dict() == {"sharp": 250, "round": 250}
    assert plan["stimulus_id"].iloc[0] == "shape-sharp-0001"
    by_class = plan.groupby("label")["sharpness"]
    assert by_class.mean()["sharp"] > 3 * by_class.mean()["round"]
    assert by_class.min()["sharp"] > by_class.max()["round"]
    # size is matched by area, so the label is not a pixel-count cue
    areas = plan.groupby("label")["area_fraction"].mean()
    assert areas["sharp"] == pytest.approx(areas["round"], rel=0.1)


def test_rendered_shapes_are_antialiased_rgb_and_reproducible(tmp_path):
    cfg = {"per_class": 3, "size": 96}
    first = shapes.render_shapes(cfg, 5, tmp_path / "a/manifest.parquet", tmp_path / "a/images")
    shapes.render_shapes(cfg, 5, tmp_path / "b/manifest.parquet", tmp_path / "b/images")
    assert first["label"].value_counts().to_dict() == {"sharp": 3, "round": 3}
    for row in first.itertuples():
        path = resolve_stimulus_path(tmp_path / "a/manifest.parquet", row.path)
        assert sha(path) == sha(tmp_path / "b" / row.path)
        image = Image.open(path)
        assert (image.mode, image.size) == ("RGB", (96, 96))
        grey = np.asarray(image.convert("L"), dtype=np.int16)
        edges = (np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1]) > 0
        assert len(np.unique(grey[:-1, :-1][edges])) > 5  # intermediate levels, not a hard step


# --- scenes ------------------------------------------------------------------------------

NUMBERS = {"one": 1, "two": 2, "three": 3}


def check_caption(text: str, scene: dict) -> None:
    """Every attribute a caption names is in the scene; every count is right."""
    objects = scene["objects"]
    words_ = re.findall(r"[a-z]+", text)
    for word in words_:
        if word in scenes.COLOURS:
            assert word in {o["colour"] for o in objects}, (text, scene)
        singular = word[:-1] if word.endswith("s") and word[:-1] in scenes.SHAPES else word
        if singular in scenes.SHAPES:
            assert singular in {o["shape"] for o in objects}, (text, scene)
    for position, phrase in scenes.WHERE.items():
        if phrase in text:
            assert position in {o["position"] for o in objects}, (text, scene)
    if match := re.search(r"on a (\w+) background", text):
        assert match.group(1) == scene["background"], (text, scene)
    if match := re.fullmatch(r"there (?:is|are) (\w+) shapes? in the picture", text):
        assert NUMBERS[match.group(1)] == len(objects), (text, scene)
    elif match := re.fullmatch(r"there (?:is|are) (\w+) (?:(\w+) )?(\w+?)s?", text):
        number, colour, shape = match.groups()
        n = sum(o["shape"] == shape and colour in (None, o["colour"]) for o in objects)
        assert NUMBERS[number] == n, (text, scene)


def test_full_scale_scene_plan_captions_are_distinct_and_true():
    scene_rows, captions = scenes.scene_plan(STIMULI_CFG["scenes"], seed=0)
    assert len(scene_rows) == 200 and len(captions) == 1000
    assert captions["stimulus_id"].iloc[0] == "scene-0001-c0"
    per_image = captions.groupby("image_id")
    assert per_image["text"].nunique().eq(5).all() and per_image["template"].nunique().eq(5).all()
    assert set(captions["image_id"]) == set(scene_rows["stimulus_id"])
    compositions = {
        r.stimulus_id: {"objects": json.loads(r.objects), "background": r.background}
        for r in scene_rows.itertuples()
    }
    for row in captions.itertuples():
        check_caption(row.text, compositions[row.image_id])
    assert {n for n in scene_rows["n_objects"]} == {1, 2, 3}
    assert captions["text"].str.contains(r"^there are two \w+ \w+s$").any()


def test_caption_checker_rejects_false_captions():
    scene = {"objects": [{"shape": "circle", "colour": "red", "position": "left"}], "background": "white"}
    check_caption("a red circle on the left", scene)
    for false in ("a blue circle on the left", "a red square on the left", "a red circle at the top",
                  "a red circle on a black background", "there are two shapes in the picture",
                  "there are two red circles"):  # fmt: skip
        with pytest.raises(AssertionError):
            check_caption(false, scene)


def test_scenes_render_and_spoken_captions_share_ids(tmp_path):
    cfg = {"images": 3, "captions_per_image": 5, "size": 64}
    scene_rows, captions = scenes.compose_scenes(
        cfg, 3, tmp_path / "scenes/images", tmp_path / "scenes/manifest.parquet", tmp_path / "ct.parquet"
    )
    for row in scene_rows.itertuples():
        image = Image.open(resolve_stimulus_path(tmp_path / "scenes/manifest.parquet", row.path))
        assert (image.mode, image.size) == ("RGB", (64, 64))
    few = captions.head(3)
    spoken = speech.speak_captions(few, TTS_CFG, tmp_path / "captions/manifest.parquet", tmp_path / "captions/audio")
    assert list(spoken["stimulus_id"]) == list(few["stimulus_id"])
    assert list(spoken["image_id"]) == list(few["image_id"])
    assert list(spoken["voice"]) == [v["id"] for v in TTS_CFG["voices"][:3]]
    assert set(spoken["input"]) == {"text"} and list(spoken["spoken"]) == list(few["text"])
    assert (spoken["sample_rate"] == 16000).all() and (spoken["duration"] > 0.5).all()


# --- entry scripts -----------------------------------------------------------------------


def run_script(name: str, **sections) -> None:
    snakemake = SimpleNamespace(threads=1, log=[], input=SimpleNamespace(), params=SimpleNamespace())
    for section, values in sections.items():
        setattr(snakemake, section, SimpleNamespace(**values) if isinstance(values, dict) else values)
    runpy.run_path(str(SCRIPTS / name), init_globals={"snakemake": snakemake}, run_name="__main__")


def test_entry_scripts_end_to_end(tmp_path):
    """Each script with the params the rules in rules/stimuli.smk pass: its config section."""
    pseudo_cfg = {**PSEUDO_CFG, "words_per_class": 1}
    res = tmp_path / "results/stimuli"
    run_script(
        "make_pseudowords.py",
        params={"cfg": pseudo_cfg, "seed": 0},
        output={"manifest": str(res / "pseudoword_text/manifest.parquet")},
        log=[str(tmp_path / "logs/make_pseudowords.log")],
    )
    run_script(
        "synthesize_speech.py",
        params={"cfg": TWO_VOICES, "kind": "pseudowords", "seed": 0},
        input={"manifest": str(res / "pseudoword_text/manifest.parquet")},
        output={"manifest": str(res / "pseudowords/manifest.parquet"), "directory": str(res / "pseudowords/audio")},
        threads=2,
    )
    run_script(
        "render_shapes.py",
        params={"cfg": {"per_class": 2, "size": 32}, "seed": 0},
        output={"manifest": str(res / "shapes/manifest.parquet"), "directory": str(res / "shapes/images")},
    )
    run_script(
        "compose_scenes.py",
        params={"cfg": {"images": 1, "captions_per_image": 5, "size": 32}, "seed": 0},
        output={
            "manifest": str(res / "scenes/manifest.parquet"),
            "directory": str(res / "scenes/images"),
            "caption_text": str(res / "caption_text/manifest.parquet"),
        },
    )
    run_script(
        "synthesize_speech.py",
        params={"cfg": TWO_VOICES, "kind": "captions", "seed": 0},
        input={"manifest": str(res / "caption_text/manifest.parquet")},
        output={"manifest": str(res / "captions/manifest.parquet"), "directory": str(res / "captions/audio")},
    )
    counts = {s: len(read_manifest(res / s / "manifest.parquet")) for s in
              ("pseudoword_text", "pseudowords", "shapes", "scenes", "caption_text", "captions")}  # fmt: skip
    assert counts == {
        "pseudoword_text": 4, "pseudowords": 8, "shapes": 4, "scenes": 1, "caption_text": 5, "captions": 5,
    }  # fmt: skip
    assert "pseudoword_text: 2 words" in (tmp_path / "logs/make_pseudowords.log").read_text()
    for set_name in ("pseudowords", "shapes", "scenes", "captions"):
        manifest_path = res / set_name / "manifest.parquet"
        for rel in read_manifest(manifest_path)["path"]:
            assert resolve_stimulus_path(manifest_path, rel).is_file()
