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
from avprobe.sets import CORPUS_SET_MODALITY, corpus_sets
from avprobe.stimuli import audio, corpora, impacts, pseudowords, qc, scenes, shapes, speech, tts

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
STIMULI_CFG = yaml.safe_load((ROOT / "config.yaml").read_text())["stimuli"]
PSEUDO_CFG = STIMULI_CFG["pseudowords"]
TTS_CFG = STIMULI_CFG["tts"]
TWO_VOICES = {**TTS_CFG, "voices": [TTS_CFG["voices"][0], TTS_CFG["voices"][2]]}  # two espeak variants
V1, V2 = (v["id"] for v in TWO_VOICES["voices"])
PIPER_VOICES = [v for v in TTS_CFG["voices"] if v["engine"] == "piper"]
#: One espeak and one piper voice: both engines in every small synthesis test.
MIXED_VOICES = {**TTS_CFG, "voices": [TTS_CFG["voices"][0], PIPER_VOICES[0]]}


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


def _synthetic_word(rate: int, lead_ms: float, tail_ms: float, burst_db: float = -35.0) -> tuple[np.ndarray, int, int]:
    """A plosive + vowel with known timing: ``lead_ms`` of silence, a 3 ms release burst
    (white noise at ``burst_db`` re the vowel's peak, as weak as a /b/ release), 15 ms of gap,
    a 250 ms vowel (120 Hz harmonics, smooth envelope), then ``tail_ms`` of silence.
    Returns (samples, burst start, burst length) in samples."""
    rng = np.random.default_rng(0)
    ms = lambda t: int(round(t * rate / 1000))  # noqa: E731
    burst = np.clip(rng.standard_normal(ms(3)) / 3.0, -1, 1) * 10 ** (burst_db / 20)
    burst[0] = 10 ** (burst_db / 20)  # a release transient starts on its largest sample
    t = np.arange(ms(250)) / rate
    vowel = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 8))
    vowel *= np.sin(np.pi * t / t[-1]) ** 0.5 / np.abs(vowel).max()
    x = np.concatenate([np.zeros(ms(lead_ms)), burst, np.zeros(ms(15)), vowel, np.zeros(ms(tail_ms))])
    return (0.5 * x).astype(np.float32), ms(lead_ms), burst.size


@pytest.mark.parametrize("lead_ms, tail_ms", [(200.0, 300.0), (0.0, 0.0), (20.0, 5.0)])
def test_postprocessing_keeps_onset_bursts_with_a_margin_and_fades_the_ends(lead_ms, tail_ms):
    """Trimming and loudness never remove the burst before a vowel: it survives, whole, with
    the configured margin of quiet before it (zeros added when the engine gave none), and the
    clip starts and ends on 0 (no click)."""
    rate = 16000
    settings = audio.Postprocessing()
    x, burst_at, burst_len = _synthetic_word(rate, lead_ms, tail_ms)
    out, info = audio.postprocess(x, rate, settings)
    margin = int(round(settings.trim_margin_ms * rate / 1000))
    assert out[0] == 0.0 and out[-1] == 0.0
    # The first sound in the output is the burst, exactly `margin` samples in, unchanged in
    # shape (one gain for the whole clip): the fade never reached it.
    gain = 10 ** (info["gain_db"] / 20)
    first = int(np.flatnonzero(np.abs(out) > 1e-9)[0])
    assert first == margin
    np.testing.assert_allclose(out[margin : margin + burst_len], gain * x[burst_at : burst_at + burst_len], rtol=1e-5, atol=1e-7)
    assert np.all(out[:margin] == 0.0)
    # The end: `margin` samples after the last sound, and no sound lost on the way (energy
    # matches up to the gain; the fade only touched samples below the threshold).
    peak = np.abs(out).max()
    last = int(np.flatnonzero(np.abs(out) >= peak * 10 ** (settings.trim_threshold_db / 20))[-1])
    assert out.size - 1 - last == margin
    assert np.sum(out.astype(np.float64) ** 2) == pytest.approx(gain**2 * np.sum(x.astype(np.float64) ** 2), rel=1e-4)
    # Burst-to-vowel level ratio is what it was (a burst 35 dB down is still there).
    vowel = slice(margin + burst_len + int(0.015 * rate), margin + burst_len + int(0.265 * rate))
    ratio_in = np.abs(x[burst_at : burst_at + burst_len]).max() / np.abs(x).max()
    ratio_out = np.abs(out[margin : margin + burst_len]).max() / np.abs(out[vowel]).max()
    assert ratio_out == pytest.approx(ratio_in, rel=1e-4)


def test_fades_are_raised_cosines_ending_on_zero_and_fade_must_fit_the_margin():
    x = np.ones(1000, np.float32)
    faded = audio.apply_fades(x, 1000, fade_ms=100)
    assert faded[0] == 0.0 and faded[-1] == 0.0 and np.all(np.diff(faded[:100]) > 0)
    np.testing.assert_array_equal(faded[100:900], 1.0)
    with pytest.raises(ValueError, match="fade_ms"):
        audio.Postprocessing(trim_margin_ms=5.0, fade_ms=10.0)


def test_espeak_pseudowords_start_and_end_on_zero_with_the_burst_after_the_margin():
    """Real engine output: /b/-initial and /k/-initial words keep a quiet margin before their
    first sound (the burst is not trimmed away) and end on 0."""
    settings = audio.Postprocessing()
    engine = tts.get_engine("espeak")
    margin = int(round(settings.trim_margin_ms * settings.sample_rate / 1000))
    for word in ("bobabo", "kikaki"):
        for entry in TTS_CFG["voices"]:
            voice = tts.Voice.from_config(entry)
            if voice.engine != "espeak":
                continue
            utt = engine.synthesize(voice, pseudowords.espeak_phonemes(word), "phonemes")
            out, _ = audio.postprocess(utt.samples, utt.sample_rate, settings)
            assert out[0] == 0.0 and out[-1] == 0.0, (word, voice.id)
            peak = np.abs(out).max()
            first = int(np.flatnonzero(np.abs(out) >= peak * 10 ** (settings.trim_threshold_db / 20))[0])
            assert first >= margin - 1, (word, voice.id, first)


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
    assert set(manifest["stimulus_id"]) == {f"kiki-{V1}", f"kiki-{V2}", f"bouba-{V1}", f"bouba-{V2}"}
    assert manifest.set_index("stimulus_id").loc[f"bouba-{V2}", "path"] == f"audio/bouba-{V2}.wav"
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
        # trimmed with margins: the first and last sound (above the trim threshold) are exactly
        # the margin (50 ms) from the ends, and the ends are faded to 0
        post = audio.Postprocessing()
        margin = int(round(post.trim_margin_ms * rate / 1000))
        loud = np.flatnonzero(np.abs(x) >= np.abs(x).max() * 10 ** (post.trim_threshold_db / 20))
        assert loud[0] == margin and x.size - 1 - loud[-1] == margin
        assert x[0] == 0.0 and x[-1] == 0.0
    assert manifest.set_index("stimulus_id").loc[f"bouba-{V1}", "spoken_ipa"].replace("ˈ", "") == "buːbɑː"


def test_synthesis_is_byte_identical_and_voices_differ(spoken):
    (root2, m2), (root1, m1) = spoken
    for rel in m2["path"]:
        assert sha(root2 / rel) == sha(root1 / rel), rel
    assert sha(root2 / f"audio/kiki-{V1}.wav") != sha(root2 / f"audio/kiki-{V2}.wav")
    durations = m2.set_index("stimulus_id")["duration"]
    assert durations[f"kiki-{V1}"] != durations[f"kiki-{V2}"]


def test_full_scale_pseudoword_plan_has_3888_word_clips(words):
    plan = speech.pseudoword_clip_plan(words, TTS_CFG)
    assert len(TTS_CFG["voices"]) == 6
    assert (~plan["is_reference"]).sum() == 648 * 6 == 3888
    assert len(plan) == 650 * 6 and plan["stimulus_id"].is_unique
    assert plan.set_index("stimulus_id").loc[f"kikaki-{V2}", "spoken"] == "[[k'i:kA:ki:]]"
    text_plan = speech.pseudoword_clip_plan(words, {**TTS_CFG, "input": "text"})
    assert text_plan.set_index("stimulus_id").loc[f"bouba-{V1}", "spoken"] == "bouba"


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
    snakemake = SimpleNamespace(threads=1, log=[], input=SimpleNamespace(), params=SimpleNamespace(),
                                wildcards=SimpleNamespace())  # fmt: skip
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


# --- piper (neural TTS) ----------------------------------------------------------------------


def test_default_voices_are_six_from_two_engines_one_neural():
    voices = [tts.check_voice(tts.Voice.from_config(v)) for v in TTS_CFG["voices"]]
    assert len(voices) == 6 and {v.engine for v in voices} == {"espeak", "piper"}
    model, config = tts.find_piper_voice(PIPER_VOICES[0]["voice"])
    assert model.name == "en_US-joe-medium.onnx" and config.is_file()


def test_tts_ipa_is_what_espeak_says_for_the_mnemonics():
    """Piper gets the IPA that espeak itself reports for the espeak input: same phonemes."""
    engine = tts.get_engine("espeak")
    voice = tts.Voice.from_config(TTS_CFG["voices"][0])
    # every letter of the inventory; no intervocalic t (American espeak flaps it to ɾ)
    for word in ("bouba", "kiki", "gaxaga", "hulomu", "pinedi", "sosaso", "kikaki"):
        spoken = engine.synthesize(voice, pseudowords.espeak_phonemes(word), "phonemes").phonemes
        assert spoken == pseudowords.tts_ipa(word), word
    assert pseudowords.tts_ipa("bouba") == "bˈuːbɑː"


def test_piper_phoneme_input_says_buba_deterministically_and_text_does_not():
    engine = tts.get_engine("piper")
    voice = tts.Voice.from_config(PIPER_VOICES[0])
    first = engine.synthesize(voice, "[[bˈuːbɑː]]", "phonemes")
    again = engine.synthesize(voice, "[[bˈuːbɑː]]", "phonemes")
    assert first.phonemes == "bˈuːbɑː" and first.sample_rate == 22050
    assert first.samples.dtype == np.float32 and 0.3 < first.samples.size / 22050 < 1.5
    assert first.samples.tobytes() == again.samples.tobytes()  # noise 0: no sampling at all
    kiki = engine.synthesize(voice, "[[kˈiːkiː]]", "phonemes").samples
    assert kiki.tobytes() != first.samples.tobytes()
    spelled = engine.synthesize(voice, "bouba", "text").phonemes
    assert "aʊ" in spelled  # piper's espeak rules read the spelling as /baʊbə/ too
    with pytest.raises(ValueError, match="does not know the phonemes"):
        engine.synthesize(voice, "[[b☃uba]]", "phonemes")
    with pytest.raises(ValueError, match="IPA in"):
        engine.synthesize(voice, "buba", "phonemes")


def test_voice_options_are_checked_per_engine():
    with pytest.raises(ValueError, match="no options .*length_scale"):
        tts.check_voice(tts.Voice("x", "espeak", "en-us", length_scale=1.2))
    with pytest.raises(ValueError, match="no options .*variant"):
        tts.check_voice(tts.Voice("x", "piper", "en_US-joe-medium", variant="m1"))
    with pytest.raises(ValueError, match="unknown TTS engine"):
        tts.check_voice(tts.Voice("x", "festival", "kal"))
    with pytest.raises(ValueError, match="no installed piper voice 'xx_XX-nobody-low'"):
        tts.find_piper_voice("xx_XX-nobody-low")
    with pytest.raises(ValueError, match="one speaker only"):
        tts.get_engine("piper").synthesize(tts.Voice("x", "piper", "en_US-joe-medium", speaker=3), "[[a]]", "phonemes")


def test_plan_gives_each_engine_its_own_phoneme_alphabet(words):
    plan = speech.pseudoword_clip_plan(words, MIXED_VOICES).set_index("stimulus_id")
    assert plan.loc[f"bouba-{V1}", "spoken"] == "[[b'u:bA:]]"
    assert plan.loc["bouba-joe", "spoken"] == "[[bˈuːbɑː]]"
    assert plan.loc["gudugu-joe", "spoken"] == "[[ɡˈuːduːɡuː]]"
    text = speech.pseudoword_clip_plan(words, {**MIXED_VOICES, "input": "text"}).set_index("stimulus_id")
    assert text.loc["bouba-joe", "spoken"] == "bouba"


# --- QC ----------------------------------------------------------------------------------------


def test_qc_finds_planted_clipping_and_silence(tmp_path):
    rate = 16000
    tone = 0.5 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)
    tone[4000:4010] = 1.0  # 10 clipped samples
    tone[9000:9003] = -1.2  # 3 more, beyond full scale (float WAVs keep them)
    x = np.concatenate([np.zeros(rate // 2), tone, np.zeros(int(0.4 * rate))]).astype(np.float32)
    audio.write_wav(tmp_path / "audio/bad.wav", x, rate)
    audio.write_wav(tmp_path / "audio/good.wav", (0.5 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)).astype(np.float32), rate)
    audio.write_wav(tmp_path / "audio/silent.wav", np.zeros(400, np.float32), rate)
    manifest = pd.DataFrame({"stimulus_id": ["bad", "good", "silent"],
                             "path": ["audio/bad.wav", "audio/good.wav", "audio/silent.wav"]})  # fmt: skip
    manifest.to_parquet(tmp_path / "manifest.parquet")
    table = qc.write_audio_qc(tmp_path / "manifest.parquet").set_index("stimulus_id")
    assert (tmp_path / "qc.parquet").is_file()
    bad = table.loc["bad"]
    assert bad["n_clipped"] == 13
    assert bad["leading_silence"] == pytest.approx(0.5, abs=1e-3)
    assert bad["trailing_silence"] == pytest.approx(0.4, abs=1e-3)
    assert bad["duration"] == pytest.approx(1.9) and bad["peak"] == pytest.approx(1.2)
    assert set(bad["flags"].split(";")) == {"clipped", "leading_silence", "trailing_silence"}
    good = table.loc["good"]
    assert good["flags"] == "" and good["n_clipped"] == 0 and good["leading_silence"] < 1e-3
    assert good["rms_dbfs"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert set(table.loc["silent", "flags"].split(";")) == {"silent", "too_short"}
    assert table.loc["silent", "leading_silence"] == pytest.approx(0.025)
    assert (table["silence_db"] == -40.0).all()  # relative to each clip's peak
    # the threshold is relative: the same clip 40 dB quieter has the same silences
    quiet = qc.clip_qc(x * 0.01, rate)
    assert (quiet["leading_silence"], quiet["trailing_silence"]) == (bad["leading_silence"], bad["trailing_silence"])


def test_synthesised_sets_write_their_qc_tables(spoken):
    root, manifest = spoken[0]
    table = pd.read_parquet(root / "qc.parquet")
    assert table["stimulus_id"].tolist() == manifest["stimulus_id"].tolist()
    assert (table["n_clipped"] == 0).all() and (table["flags"] == "").all()
    assert table["duration"].to_numpy() == pytest.approx(manifest["duration"].to_numpy())


# --- real corpora ------------------------------------------------------------------------------


def _wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate, subtype="PCM_16")


def _jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


@pytest.fixture
def flickr8k(tmp_path) -> dict:
    """A two-test-image Flickr8k in its distributed layout (+ one train image)."""
    root = tmp_path / "flickr"
    images = ["1000268201_693b08cb0e.jpg", "997722733_0cb5439472.jpg", "111_train.jpg"]
    tokens, wav2capt, wav2spk = [], [], []
    for image in images:
        _jpg(root / "Flicker8k_Dataset" / image)
        for n in range(2):
            wav = f"{image[:-4]}_{n}.wav"
            _wav(root / "flickr_audio/wavs" / wav, 0.5 + 0.1 * n)
            tokens.append(f"{image}#{n}\tcaption {n} of {image[:-4]} .")
            wav2capt.append(f"{wav} {image} #{n}")
            wav2spk.append(f"{wav} {n + 40}")
    tokens.append("2258277193_586949ec62.jpg.1#0\tan odd line of the real file")
    (root / "Flickr8k_text").mkdir()
    (root / "Flickr8k_text/Flickr8k.token.txt").write_text("\n".join(tokens) + "\n")
    (root / "Flickr8k_text/Flickr_8k.testImages.txt").write_text("997722733_0cb5439472.jpg\n1000268201_693b08cb0e.jpg\n")
    (root / "flickr_audio/wav2capt.txt").write_text("\n".join(wav2capt) + "\n")
    (root / "flickr_audio/wav2spk.txt").write_text("\n".join(wav2spk) + "\n")
    return {
        "wav_dir": str(root / "flickr_audio/wavs"),
        "wav2capt_file": str(root / "flickr_audio/wav2capt.txt"),
        "speakers_file": str(root / "flickr_audio/wav2spk.txt"),
        "captions_file": str(root / "Flickr8k_text/Flickr8k.token.txt"),
        "images_dir": str(root / "Flicker8k_Dataset"),
        "split_file": str(root / "Flickr8k_text/Flickr_8k.testImages.txt"),
    }


@pytest.fixture
def spokencoco(tmp_path) -> dict:
    """A tiny SpokenCOCO: three val images, two of them in the Karpathy test split."""
    root, coco = tmp_path / "SpokenCOCO", tmp_path / "coco"
    data, karpathy = [], []
    for i, split in ((325114, "test"), (42, "test"), (7, "val")):
        image = f"val2014/COCO_val2014_{i:012d}.jpg"
        _jpg(coco / image)
        captions = []
        for k in range(3):
            wav = f"wavs/val/0/spk{k}-X_{i}_{k}.wav"
            _wav(root / wav)
            captions.append({"text": f"A CAPTION {k} OF {i}", "speaker": f"spk{k}", "uttid": f"spk{k}-X_{i}_{k}", "wav": wav})
        data.append({"image": image, "captions": captions})
        karpathy.append({"filepath": "val2014", "filename": Path(image).name, "split": split})
    (root / "SpokenCOCO_val.json").write_text(json.dumps({"data": data}))
    unrolled = [{"image": e["image"], "caption": c} for e in data for c in e["captions"]]
    (root / "SpokenCOCO_val_unrolled.json").write_text(json.dumps({"data": unrolled}))
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": karpathy}))
    return {"root": str(root), "json_file": str(root / "SpokenCOCO_val.json"), "images_dir": str(coco),
            "split_file": str(tmp_path / "dataset_coco.json")}  # fmt: skip


def test_flickr8k_adapter_gives_the_caption_set_columns(tmp_path, flickr8k):
    res = tmp_path / "results/stimuli"
    names = corpora.corpus_set_names("flickr8k")
    out = {k: res / v / "manifest.parquet" for k, v in names.items()}
    images, captions, text = corpora.import_corpus("flickr8k", flickr8k, out["images"], out["captions"], out["caption_text"])
    assert images["stimulus_id"].tolist() == ["1000268201_693b08cb0e", "997722733_0cb5439472"]  # test split only
    assert captions["stimulus_id"].tolist()[:2] == ["1000268201_693b08cb0e-c0", "1000268201_693b08cb0e-c1"]
    assert {"stimulus_id", "path", "image_id", "text", "voice", "sample_rate", "duration"} <= set(captions)
    assert {"stimulus_id", "image_id", "text"} <= set(text) and list(text["stimulus_id"]) == list(captions["stimulus_id"])
    assert set(captions["image_id"]) == set(images["stimulus_id"])
    row = captions.iloc[1]
    assert (row["text"], row["voice"], row["sample_rate"]) == ("caption 1 of 1000268201_693b08cb0e .", "41", 16000)
    assert row["duration"] == pytest.approx(0.6)
    for manifest, table in ((out["images"], images), (out["captions"], captions)):
        assert read_manifest(manifest)["path"].tolist() == table["path"].tolist()
        for rel in table["path"]:
            assert not Path(rel).is_absolute() and resolve_stimulus_path(manifest, rel).is_file()
    assert len(pd.read_parquet(out["captions"].with_name("qc.parquet"))) == 4
    # without wav2capt the clips are found by name; max_images keeps the first in sorted order
    plain = {k: v for k, v in flickr8k.items() if k not in ("wav2capt_file", "speakers_file")}
    images2, captions2 = corpora.load_flickr8k({**plain, "max_images": 1})
    assert images2["stimulus_id"].tolist() == ["1000268201_693b08cb0e"] and len(captions2) == 2
    assert set(captions2["voice"]) == {"unknown"}


def test_spokencoco_adapter_reads_nested_and_unrolled_json_and_the_karpathy_split(tmp_path, spokencoco):
    images, captions = corpora.load_spokencoco(spokencoco)
    assert images["stimulus_id"].tolist() == ["COCO_val2014_000000000042", "COCO_val2014_000000325114"]
    assert len(captions) == 6 and captions["stimulus_id"].iloc[0] == "COCO_val2014_000000000042-c0"
    assert captions.iloc[0]["voice"] == "spk0" and captions.iloc[0]["text"] == "A CAPTION 0 OF 42"
    unrolled_images, unrolled = corpora.load_spokencoco(
        {**spokencoco, "json_file": spokencoco["json_file"].replace("val.json", "val_unrolled.json")}
    )
    pd.testing.assert_frame_equal(unrolled_images, images)
    pd.testing.assert_frame_equal(unrolled, captions)
    no_split = {k: v for k, v in spokencoco.items() if k != "split_file"}
    assert len(corpora.load_spokencoco(no_split)[0]) == 3
    config = {"stimuli": {"corpora": {"spokencoco": spokencoco}}}
    assert corpora.check_corpus_config(config) == {"spokencoco": {"images": 2, "captions": 6}}
    assert set(corpus_sets(config)) == {"spokencoco_images", "spokencoco_captions", "spokencoco_caption_text"}
    assert corpora.check_corpus_config({"stimuli": {}}) == {} and corpus_sets({"stimuli": {}}) == {}
    assert CORPUS_SET_MODALITY["flickr8k_captions"] == "audio"


def _break(cfg: dict, key: str, value) -> dict:
    return {**cfg, key: value}


def test_missing_or_malformed_corpus_fails_with_one_clear_message(tmp_path, flickr8k, spokencoco):
    def check(corpus, cfg, message):
        with pytest.raises(corpora.CorpusConfigError, match=message):
            corpora.check_corpus_config({"stimuli": {"corpora": {corpus: cfg}}})

    check("flickr8k", _break(flickr8k, "captions_file", str(tmp_path / "nope.txt")),
          r"stimuli\.corpora\.flickr8k\.captions_file: file .*nope\.txt' does not exist")  # fmt: skip
    check("flickr8k", {k: v for k, v in flickr8k.items() if k != "split_file"},
          r"flickr8k\.split_file: a file path is required")  # fmt: skip
    check("flickr8k", _break(flickr8k, "wav_dir", str(tmp_path / "nowhere")), r"wav_dir: folder .* does not exist")
    check("flickr8k", {**flickr8k, "colour": "red"}, r"unknown keys \['colour'\]")
    check("flickr8k", _break(flickr8k, "max_images", 0), "max_images: a positive integer")
    bad = tmp_path / "bad_tokens.txt"
    bad.write_text("1000268201_693b08cb0e.jpg#0\tfine\nno tab and no number here\n")
    check("flickr8k", _break(flickr8k, "captions_file", str(bad)), r"captions_file: .* line 2 is malformed")
    short = tmp_path / "short_tokens.txt"
    short.write_text("1000268201_693b08cb0e.jpg#0\tonly one caption\n")
    check("flickr8k", _break(flickr8k, "captions_file", str(short)), r"no text for caption #1")
    Path(flickr8k["wav_dir"], "997722733_0cb5439472_1.wav").unlink()
    check("flickr8k", flickr8k, r"wav_dir: 1 of 4 audio files do not exist, e\.g\. .*997722733_0cb5439472_1\.wav")
    check("spokencoco", _break(spokencoco, "json_file", str(bad)), r"json_file: .* is not valid JSON")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"annotations": []}))
    check("spokencoco", _break(spokencoco, "json_file", str(empty)), r'needs a non-empty "data" list')
    check("spokencoco", _break(spokencoco, "split_file", str(empty)), r"split_file: .* is not a Karpathy split file")
    check("nocaps", {}, r"unknown corpus 'nocaps'")
    with pytest.raises(corpora.CorpusConfigError, match="stimuli.corpora: expected a mapping"):
        corpora.check_corpus_config({"stimuli": {"corpora": ["flickr8k"]}})


def test_import_corpus_entry_script(tmp_path, spokencoco):
    res = tmp_path / "results/stimuli"
    outputs = {k: str(res / v / "manifest.parquet") for k, v in corpora.corpus_set_names("spokencoco").items()}
    run_script(
        "import_corpus.py",
        params={"cfg": spokencoco},
        wildcards={"corpus": "spokencoco"},
        output=outputs,
        log=[str(tmp_path / "logs/import.log")],
    )
    assert len(read_manifest(outputs["captions"])) == 6 and len(read_manifest(outputs["images"])) == 2
    assert "spokencoco: 2 images, 6 spoken captions" in (tmp_path / "logs/import.log").read_text()


# --- reproducibility: every synthesised set, twice ---------------------------------------------


def _build_all(root: Path) -> list[Path]:
    """A small config of every synthesised set (both TTS engines, impacts) into root."""
    words = pseudowords.inventory({**PSEUDO_CFG, "words_per_class": 1}, seed=0)
    res = root / "results/stimuli"
    speech.synthesize_pseudowords(words, MIXED_VOICES, res / "pseudowords/manifest.parquet", res / "pseudowords/audio", 2)
    shapes.render_shapes({"per_class": 2, "size": 32}, 0, res / "shapes/manifest.parquet", res / "shapes/images")
    _, captions = scenes.compose_scenes({"images": 1, "captions_per_image": 2, "size": 32}, 0, res / "scenes/images",
                                        res / "scenes/manifest.parquet", res / "caption_text/manifest.parquet")  # fmt: skip
    speech.speak_captions(captions, MIXED_VOICES, res / "captions/manifest.parquet", res / "captions/audio", 1)
    impact_cfg = {"materials": ["wood", "glass"], "geometries": ["plate"], "sizes": [0.15]}
    impacts.synthesize_impacts(impact_cfg, 0, res / "impacts/manifest.parquet", res / "impacts/audio")
    return sorted(p for p in res.rglob("*") if p.is_file())


def test_every_stimulus_file_is_byte_identical_on_a_rerun(tmp_path):
    first, second = _build_all(tmp_path / "one"), _build_all(tmp_path / "two")
    rel = [p.relative_to(tmp_path / "one") for p in first]
    assert rel == [p.relative_to(tmp_path / "two") for p in second]
    assert len([p for p in rel if p.suffix == ".wav"]) == 4 * 2 + 2 + 4  # words × voices, captions, impacts
    engines = set(read_manifest(tmp_path / "one/results/stimuli/pseudowords/manifest.parquet")["engine"])
    assert engines == {"espeak", "piper"}
    different = [str(r) for a, b, r in zip(first, second, rel) if sha(a) != sha(b)]
    assert not different, different  # WAVs, PNGs, manifests and QC tables alike


def test_shape_adjectives_are_labelled_text_anchors():
    from avprobe.stimuli.anchors import adjective_manifest

    df = adjective_manifest({"round": ["round", "soft"], "sharp": ["spiky"], "template": "a {adjective} thing"})
    assert df["text"].tolist() == ["a round thing", "a soft thing", "a spiky thing"]
    assert df["label"].tolist() == ["round", "round", "sharp"]
    assert df["stimulus_id"].is_unique
    with pytest.raises(ValueError, match="sharp: give at least one"):
        adjective_manifest({"round": ["round"], "sharp": []})
    with pytest.raises(ValueError, match="listed twice"):
        adjective_manifest({"round": ["soft"], "sharp": ["soft"]})
    with pytest.raises(ValueError, match="must contain"):
        adjective_manifest({"round": ["a"], "sharp": ["b"], "template": "a shape"})
