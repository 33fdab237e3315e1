"""Dense similarity maps (seed 002): metrics against references, planted localisation, nulls."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from avprobe.analysis import dense
from avprobe.io import write_parquet
from avprobe.stimuli.scenes import compose_scenes, object_mask, scene_plan
from avprobe.stimuli.shapes import render_shapes


def test_auc_equals_sklearn_and_pointing_counts_ties():
    rng = np.random.default_rng(0)
    maps = np.round(rng.normal(size=(40, 16)), 1)  # rounding makes ties
    positive = rng.random((40, 16)) < 0.3
    positive[:, 0], positive[:, 1] = True, False
    hit, auc = dense.localisation_scores(maps, positive)
    for q in range(40):
        assert auc[q] == pytest.approx(roc_auc_score(positive[q], maps[q]), abs=1e-12)
        top = maps[q] == maps[q].max()
        assert hit[q] == pytest.approx(positive[q][top].mean())
    flat_hit, flat_auc = dense.localisation_scores(np.zeros((1, 16)), positive[:1])
    assert flat_hit[0] == pytest.approx(positive[0].mean()) and flat_auc[0] == 0.5
    _, none = dense.localisation_scores(maps[:1], np.zeros((1, 16), bool))
    assert np.isnan(none[0])


def test_patch_coverage_is_the_area_share_of_each_patch():
    mask = np.zeros((64, 64), bool)
    mask[:16, :32] = True  # the top-left quarter of a 2x2 grid is half covered, etc.
    cov = dense.patch_coverage(mask, 2, 2)
    assert cov == pytest.approx(np.array([[0.5, 0.0], [0.0, 0.0]]))
    cov = dense.patch_coverage(mask, 4, 4)
    assert cov == pytest.approx(np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0.0]]))


def _scenes_with_objects(rng, n_images=30, per_image=3, p=49):
    """Each image has ``per_image`` objects (queries) on 3 random patches each."""
    positive = np.zeros((n_images * per_image, p), bool)
    for i in range(n_images):
        cells = rng.choice(p, 3 * per_image, replace=False).reshape(per_image, 3)
        for k in range(per_image):
            positive[i * per_image + k, cells[k]] = True
    return positive, np.repeat(np.arange(n_images), per_image)


def test_planted_localisation_is_found():
    rng = np.random.default_rng(1)
    positive, groups = _scenes_with_objects(rng)
    maps = positive * 1.5 + rng.normal(size=positive.shape)
    rows = {r["metric"]: r for r in dense.localisation_inference(maps, positive, groups, n_bootstrap=300,
                                                                 n_permutations=300, seed=0)}
    pg, auc = rows["pointing_game"], rows["localisation_auc"]
    assert pg["chance_uniform"] == pytest.approx(3 / 49)
    assert pg["value"] > 0.4 and pg["p"] < 0.01 and pg["ci_low"] < pg["value"] < pg["ci_high"]
    # a swap keeps a query's own map with probability 1/3 (three per scene); another object's
    # map rarely hits this one
    assert pg["chance"] == pytest.approx(pg["value"] / 3 + 2 / 3 * 3 / 49, abs=0.05)
    assert auc["value"] > 0.8 and auc["p"] < 0.01 and auc["ci_low"] > 0.5 and auc["n"] == 90


def test_a_map_of_every_object_is_not_phrase_localisation():
    """Saliency (all objects of the scene light up, whatever the phrase) beats a map without
    spatial information but not the phrase-swap null; the test keeps its level on it."""
    rng = np.random.default_rng(2)
    positive, groups = _scenes_with_objects(rng)
    rejections = 0
    for seed in range(40):
        r = np.random.default_rng(100 + seed)
        salient = np.zeros_like(positive, dtype=float)
        for g in np.unique(groups):
            scene_map = positive[groups == g].any(0) * 1.5 + r.normal(size=positive.shape[1])
            salient[groups == g] = scene_map
        rows = {x["metric"]: x for x in dense.localisation_inference(
            salient, positive, groups, n_bootstrap=0, n_permutations=200, seed=seed)}
        pg = rows["pointing_game"]
        assert pg["value"] > 3 * pg["chance_uniform"]
        assert pg["chance"] == pytest.approx(pg["value"], abs=0.15)
        rejections += pg["p"] < 0.05
    assert rejections <= 6  # P(Binomial(40, 0.05) > 6) < 0.02


def test_within_group_permutations_stay_in_their_group():
    groups = np.array([3, 1, 3, 2, 1, 3, 9])
    src = dense.within_group_permutations(np.random.default_rng(0), 200, groups)
    assert (groups[src] == groups).all()
    assert (src[:, 6] == 6).all()  # a group of one keeps its own map
    assert all(sorted(row) == list(range(7)) for row in src)
    assert len({tuple(row) for row in src}) > 10


def test_object_queries_group_repeated_objects_and_masks_match_the_drawing():
    scenes, _ = scene_plan({"images": 30, "captions_per_image": 2, "size": 96}, seed=3)
    queries = dense.object_queries(scenes, "a {colour} {shape}")
    for scene in scenes.to_dict("records"):
        sub = queries[queries["image_id"] == scene["stimulus_id"]]
        pairs = set(zip(scene["colours"], scene["shapes"]))
        assert len(sub) == len(pairs)
        assert sum(len(o) for o in sub["objects"]) == scene["n_objects"]
    scene = scenes.iloc[0].to_dict()
    obj = __import__("json").loads(scene["objects"])[0]
    mask = object_mask(scene, [0])
    if obj["shape"] == "circle":
        assert mask.sum() == pytest.approx(np.pi * (obj["radius"] * 96) ** 2, rel=0.05)
    assert mask.max() == 1.0 and mask.min() == 0.0
    everything = object_mask(scene, range(scene["n_objects"]))
    assert everything.sum() == pytest.approx(sum(object_mask(scene, [k]).sum() for k in range(scene["n_objects"])), rel=1e-6)


ORACLE = '''
import numpy as np
from avprobe.models.base import Adapter
from avprobe.stimuli.scenes import COLOURS


def chroma(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb - rgb.mean(axis=-1, keepdims=True)


class Oracle(Adapter):
    """Patches are their mean chroma (achromatic backgrounds are 0); a text is the chroma of
    the colour it names: the planted answer of every localisation query."""

    family = "oracle"
    natural_towers = ("text", "image")
    supports_dense = True

    def layers(self, tower):
        return ["joint"]

    def _embed(self, tower, items, names):
        if tower == "text":
            out = []
            for text in items:
                named = [c for c in COLOURS if c in text.split()]
                out.append(chroma(COLOURS[named[0]]) if named else np.full(3, float(len(text))))
            return {"joint": np.array(out)}
        return {"joint": np.array([chroma(x.reshape(-1, 3)).mean(0) for x in items])}

    def _dense(self, tower, items):
        side = 8
        grids = []
        for x in items:
            h = x.shape[0] // side
            c = chroma(x[: h * side, : h * side]).reshape(side, h, side, h, 3).mean(axis=(1, 3))
            grids.append(c)
        return grids


def load(name, spec, model_dir=None, device="cpu"):
    return Oracle(name, spec, kind="baseline", revision="oracle")
'''


@pytest.fixture()
def stimuli(tmp_path, monkeypatch):
    (tmp_path / "oracle_plugin.py").write_text(ORACLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    compose_scenes({"images": 12, "captions_per_image": 2, "size": 96}, 5, tmp_path / "scenes",
                   tmp_path / "scenes.parquet", tmp_path / "captions.parquet")
    render_shapes({"per_class": 3, "size": 64}, 5, tmp_path / "shapes.parquet", tmp_path / "shapes")
    words = pd.DataFrame({"stimulus_id": ["kiki-t0", "bouba-t0", "baba-t0"], "word": ["kiki", "bouba", "baba"],
                          "text": ["kiki", "bouba", "baba"], "is_reference": [True, True, False],
                          "template_index": 0, "label": ["sharp", "round", "round"]})
    write_parquet(words, tmp_path / "words.parquet")
    yield tmp_path
    sys.modules.pop("oracle_plugin", None)


def test_run_dense_localises_planted_objects_and_writes_examples(stimuli):
    d = stimuli
    table = dense.run_dense(d / "scenes.parquet", d / "shapes.parquet", d / "words.parquet",
                            d / "dense.parquet", d / "dense.npz", model="oracle",
                            spec={"family": "oracle_plugin:load", "towers": ["text", "image"]},
                            cfg={"examples": 3}, n_bootstrap=200, n_permutations=200, seed=0)
    rows = table.set_index("metric")
    # Two objects of a scene may share a colour and differ in shape: then the oracle, which
    # reads colour only, splits its maximum between them; otherwise it points right.
    assert rows.loc["pointing_game", "value"] > 0.8 > 3 * rows.loc["pointing_game", "chance_uniform"]
    assert rows.loc["pointing_game", "chance"] < rows.loc["pointing_game", "value"] - 0.2
    assert rows.loc["localisation_auc", "value"] > 0.9
    assert (rows["p"] < 0.01).all() and (rows["layer"] == "joint").all() and (rows["grid"] == "8x8").all()
    saved = pd.read_parquet(d / "dense.parquet")
    assert saved["value"].tolist() == table["value"].tolist()
    z = np.load(d / "dense.npz")
    assert z["scene_images"].shape == (3, 96, 96, 3) and z["query_maps"].shape[1:] == (8, 8)
    assert len(z["query_text"]) == len(z["query_image"]) == len(z["query_masks"]) >= 3
    assert list(z["word_text"]) == ["kiki", "bouba"] and z["word_maps"].shape == (2, 3, 8, 8)
    assert list(z["shape_labels"]) == ["sharp", "round", "sharp"]
    # the region of each example query is where its map peaks (orientation of the grid)
    for m, mask, hit in zip(z["query_maps"], z["query_masks"], z["query_hit"]):
        if hit == 1:
            r, c = np.unravel_index(np.argmax(m), m.shape)
            cell = mask[r * 12:(r + 1) * 12, c * 12:(c + 1) * 12]
            assert cell.mean() >= 0.1


def test_run_dense_refuses_a_model_without_dense_features(stimuli):
    d = stimuli
    with pytest.raises(ValueError, match="tower"):
        dense.run_dense(d / "scenes.parquet", d / "shapes.parquet", d / "words.parquet", d / "t.parquet",
                        d / "e.npz", model="oracle", spec={"family": "oracle_plugin:load", "towers": ["image"]})


# ---------------------------------------------------------------------------------------------
# Speech-prompted maps
# ---------------------------------------------------------------------------------------------

SPEECH_ORACLE = '''
import numpy as np
from avprobe.models.base import Adapter
from avprobe.stimuli.scenes import COLOURS

TONES = {c: 400.0 + 150.0 * k for k, c in enumerate(COLOURS)}  # a colour word is a pure tone
FRAME = 1600  # 0.1 s at 16 kHz


def chroma(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb - rgb.mean(axis=-1, keepdims=True)


class SpeechOracle(Adapter):
    """Audio frames carry the chroma of the colour whose tone sounds in them (silence: 0);
    patches their mean chroma. ``transpose`` returns every patch grid transposed."""

    family = "speech_oracle"
    natural_towers = ("audio", "image")
    supports_dense = True
    transpose = False

    def input_sample_rate(self, tower="audio"):
        return 16000

    def layers(self, tower):
        return ["joint"]

    def _frames(self, wave):
        out = []
        for lo in range(0, len(wave) - FRAME + 1, FRAME):
            x = wave[lo:lo + FRAME]
            if np.abs(x).max() < 1e-3:
                out.append(np.zeros(3))
                continue
            freq = np.fft.rfftfreq(FRAME, 1 / 16000)[np.argmax(np.abs(np.fft.rfft(x)))]
            colour = min(TONES, key=lambda c: abs(TONES[c] - freq))
            out.append(chroma(COLOURS[colour]))
        return np.array(out)

    def _embed(self, tower, items, names):
        if tower == "audio":
            return {"joint": np.array([self._frames(w).mean(0) for w in items])}
        return {"joint": np.array([chroma(x.reshape(-1, 3)).mean(0) for x in items])}

    def _dense(self, tower, items):
        if tower == "audio":
            return [self._frames(w) for w in items]
        grids = []
        for x in items:
            h = x.shape[0] // 8
            g = chroma(x[: h * 8, : h * 8]).reshape(8, h, 8, h, 3).mean(axis=(1, 3))
            grids.append(g.transpose(1, 0, 2) if self.transpose else g)
        return grids


def load(name, spec, model_dir=None, device="cpu"):
    adapter = SpeechOracle(name, spec, kind="baseline", revision="oracle")
    adapter.transpose = bool(spec.get("transpose"))
    return adapter
'''


def _tone_captions(scenes_manifest, out_dir, manifest_path):
    """One spoken caption per object, "a <colour> shape": silence, then the colour's tone
    (0.3 s) where the word is, then silence; word times as the TTS would give them."""
    import json

    import soundfile as sf

    from avprobe.io import read_manifest

    tones = {c: 400.0 + 150.0 * k for k, c in enumerate(__import__("avprobe.stimuli.scenes", fromlist=["COLOURS"]).COLOURS)}
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for scene in read_manifest(scenes_manifest).to_dict("records"):
        for k, o in enumerate(json.loads(scene["objects"])):
            sid = f"{scene['stimulus_id']}-c{k}"
            t = np.arange(int(0.3 * 16000)) / 16000
            wave = np.concatenate([np.zeros(3200), 0.3 * np.sin(2 * np.pi * tones[o["colour"]] * t),
                                   np.zeros(4800)]).astype(np.float32)
            sf.write(out_dir / f"{sid}.wav", wave, 16000, subtype="FLOAT")
            times = [{"word": "a", "start": 0.0, "end": 0.2}, {"word": o["colour"], "start": 0.2, "end": 0.5},
                     {"word": "shape", "start": 0.5, "end": 0.8}]
            rows.append({"stimulus_id": sid, "image_id": scene["stimulus_id"], "text": f"a {o['colour']} shape",
                         "path": f"{out_dir.name}/{sid}.wav", "word_times": json.dumps(times)})
    write_parquet(pd.DataFrame(rows), manifest_path)


@pytest.fixture()
def speech_stimuli(stimuli):
    import soundfile as sf

    d = stimuli
    (d / "speech_oracle_plugin.py").write_text(SPEECH_ORACLE)
    _tone_captions(d / "scenes.parquet", d / "captions", d / "captions.parquet")
    (d / "words").mkdir()
    t = np.arange(8000) / 16000
    for w, f in (("kiki", 400.0), ("bouba", 550.0)):
        sf.write(d / "words" / f"{w}-v.wav", (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)
    write_parquet(pd.DataFrame({"stimulus_id": ["kiki-v", "bouba-v"], "word": ["kiki", "bouba"],
                                "is_reference": True, "label": ["sharp", "round"],
                                "path": ["words/kiki-v.wav", "words/bouba-v.wav"]}), d / "spoken_words.parquet")
    yield d
    sys.modules.pop("speech_oracle_plugin", None)


def _speech_run(d, transpose=False, out="s"):
    return dense.run_dense(d / "scenes.parquet", d / "shapes.parquet", d / "spoken_words.parquet",
                           d / f"{out}.parquet", d / f"{out}.npz", model="oracle",
                           spec={"family": "speech_oracle_plugin:load", "towers": ["audio", "image"],
                                 "transpose": transpose},
                           cfg={"examples": 3}, words_set="pseudowords", query="speech",
                           captions_manifest=d / "captions.parquet", n_bootstrap=200, n_permutations=300, seed=0)


def test_spoken_words_localise_planted_objects_and_a_transposed_grid_does_not(speech_stimuli):
    d = speech_stimuli
    table = _speech_run(d)
    assert set(table["query_form"]) == {"speech"} and set(table["query_unit"]) == {"word", "caption"}
    word = table[table["query_unit"] == "word"].set_index("metric")
    pg, auc = word.loc["pointing_game"], word.loc["localisation_auc"]
    # as for the text oracle: a patch that an object barely touches has the object's chroma too
    # (cosine ignores how much), so ties at the maximum cost the pointing game a little
    assert pg["value"] > 0.85 and auc["value"] > 0.9
    assert pg["p"] < 0.01 and auc["p"] < 0.01 and pg["chance"] < pg["value"] - 0.2
    z = np.load(d / "s.npz")
    assert str(z["query_form"]) == "speech" and str(z["query_unit"]) == "word"
    assert z["query_maps"].shape[1:] == (8, 8) and z["word_maps"].shape == (2, 3, 8, 8)
    assert str(z["word_form"]) == "speech" and list(z["word_text"]) == ["kiki", "bouba"]

    flipped = _speech_run(d, transpose=True, out="t").query("query_unit == 'word'").set_index("metric")
    assert flipped.loc["pointing_game", "value"] < pg["value"] - 0.3
    assert flipped.loc["localisation_auc", "value"] < auc["value"] - 0.2

    # the figure and the summary show the speech rows (per word) beside a text model's
    from avprobe.figures.dense_heatmaps import draw
    from avprobe.summary import summarize

    text = dense.run_dense(d / "scenes.parquet", d / "shapes.parquet", d / "words.parquet", d / "x.parquet",
                           d / "x.npz", model="text-oracle", spec={"family": "oracle_plugin:load",
                                                                   "towers": ["text", "image"]},
                           cfg={"examples": 3}, n_bootstrap=50, n_permutations=50, seed=0)
    assert set(text["query_form"]) == {"text"} and set(text["query_unit"]) == {"phrase"}
    fig = draw({"examples": [str(d / "s.npz"), str(d / "x.npz")], "tables": [str(d / "s.parquet"), str(d / "x.parquet")]})
    titles = [sf._suptitle.get_text() for sf in fig.subfigs]
    assert "spoken captions on scenes (per word)" in titles[0] and "object phrases" in titles[1]
    md = summarize({"dense": [str(d / "s.parquet"), str(d / "x.parquet")]}, {}, d / "summary.md")
    assert "speech (word)" in md and "speech (caption)" in md and "text (phrase)" in md


def test_speech_queries_follow_the_word_times():
    import json

    scenes = pd.DataFrame({"stimulus_id": ["s1"], "objects": [json.dumps([
        {"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "circle"}, {"colour": "red", "shape": "star"}])]})
    times = [{"word": "a", "start": 0.0, "end": 0.1}, {"word": "red", "start": 0.1, "end": 0.4},
             {"word": "circle,", "start": 0.4, "end": 0.8}, {"word": "and", "start": 0.8, "end": 0.9},
             {"word": "stars", "start": 0.9, "end": 1.2}]
    captions = pd.DataFrame({"stimulus_id": ["s1-c0", "s1-c1"], "image_id": ["s1", "s1"],
                             "text": ["a red circle, and stars", "there are three shapes"],
                             "word_times": [json.dumps(times), "[]"]})
    q = dense.speech_queries(captions, scenes)
    got = {(r["unit"], r["query"]): (r["start"], r["end"], r["objects"]) for r in q.to_dict("records")}
    assert got[("word", "red")] == (0.1, 0.4, [0, 2])
    assert got[("word", "circle,")][2] == [0, 1] and got[("word", "stars")][2] == [2]
    assert got[("phrase", "red circle,")] == (0.1, 0.8, [0])
    assert got[("caption", "a red circle, and stars")][2] == [0, 1, 2]
    assert got[("caption", "there are three shapes")][2] == [0, 1, 2]  # names none: every object
    assert list(q["unit"]) == sorted(q["unit"], key=["word", "phrase", "caption"].index)


def test_frames_and_volumes():
    assert list(dense.frame_selection(10, 1.0, 0.2, 0.45)) == [2, 3]
    assert list(dense.frame_selection(10, 1.0, 0.21, 0.24)) == [2]  # no centre inside: the middle's frame
    assert list(dense.frame_selection(4, 1.0)) == [0, 1, 2, 3]
    rng = np.random.default_rng(0)
    frames, grid = rng.normal(size=(5, 4)), rng.normal(size=(3, 2, 4))
    vol = dense.dense_volume(frames, grid, heads=2, similarity="dot")
    assert vol.shape == (5, 3, 2, 2)
    assert vol[1, 2, 0, 1] == pytest.approx(frames[1, 2:] @ grid[2, 0, 2:], rel=1e-5)
    cos = dense.dense_volume(frames, grid)
    assert cos[0, 0, 0, 0] == pytest.approx(dense.similarity_map(frames[0], grid)[0, 0], rel=1e-5)
    m = dense.speech_map(vol, [1, 3])
    assert m == pytest.approx(vol[[1, 3]].max(-1).mean(0), rel=1e-6)


def test_the_query_form_follows_the_models_spaces_and_can_be_set():
    from avprobe import plan

    models = {"clip": {"family": "clip", "towers": ["text", "image"]},
              "dav": {"family": "densav", "towers": ["audio", "image"]},
              "av": {"family": "lab.mod:load", "towers": ["audio", "image", "text"],
                     "spaces": [{"name": "audio_image", "towers": ["audio", "image"]},
                                {"name": "text_image", "towers": ["text", "image"]}]}}
    cfg = {"models": models, "analysis": {"dense": {"models": ["clip", "dav"]}}}
    plan.check_dense(cfg)
    assert plan.dense_params(cfg, "clip") == {"query": "text", "words": "pseudoword_text", "space": "text_image",
                                              "space_layer": "joint"}
    assert plan.dense_params(cfg, "dav") == {"query": "speech", "words": "pseudowords", "space": "audio_image",
                                             "space_layer": "joint"}
    # a model with both: text by default, speech on request (then the space joining audio and image)
    assert plan.dense_query(cfg, "av") == "text"
    speech = {"models": models, "analysis": {"dense": {"models": ["av"], "query": "speech"}}}
    assert plan.dense_params(speech, "av")["space"] == "audio_image"
    # written words with spoken queries need one space joining all three towers
    mixed = {"models": models, "analysis": {"dense": {"models": ["dav"], "words": "pseudoword_text"}}}
    with pytest.raises(plan.ConfigError, match="missing \\['text'\\]"):
        plan.check_dense(mixed)
    with pytest.raises(plan.ConfigError, match="missing \\['audio'\\]"):
        plan.check_dense({"models": models, "analysis": {"dense": {"models": ["clip"], "query": "speech"}}})


def test_word_times_move_onto_the_trimmed_clip():
    from avprobe.stimuli.word_times import clip_word_times, from_json, to_json

    rng = np.random.default_rng(0)
    reference = rng.normal(size=16000).astype(np.float32)
    clip = 0.5 * reference[3200:12000] * np.minimum(1.0, np.arange(8800) / 160.0)  # trimmed, scaled, faded in
    words = [("a", 0.1, 0.3), ("red", 0.3, 0.6), ("star", 0.6, 0.9)]
    got = clip_word_times(words, clip, reference, 16000)
    assert [w["word"] for w in got] == ["a", "red", "star"]
    assert [(w["start"], w["end"]) for w in got] == [(0.0, 0.1), (0.1, 0.4), (0.4, 0.55)]
    assert from_json(to_json(got)) == got and from_json(None) == [] and from_json("[]") == []
