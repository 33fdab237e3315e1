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
