"""Dense similarity maps (seed 002, DenseAV): which image regions a phrase or a word lights up.

A model that puts image **patches** and queries in one space (:meth:`Adapter.dense`, e.g.
CLIP's patch tokens through its visual projection, or a DenseAV plugin) gives, per query and
image, a map of cosine similarities between the query's pooled ``joint`` embedding and every
patch. Two uses:

* **Localisation** on the ``scenes`` set, where the ground truth is known: every distinct
  (colour, shape) of a scene is a query (``object_template``, default "a {colour} {shape}");
  its region is the union of the scene's objects of that colour and shape, drawn as the scene
  was (:func:`avprobe.stimuli.scenes.object_mask`, later objects occluding earlier ones). A
  patch is **positive** when at least ``min_coverage`` (default 0.1) of its area lies in the
  region. Metrics (``metric`` column; one row each, layer ``joint``):

  * ``pointing_game`` — share of queries whose most similar patch is positive (Zhang et al.'s
    pointing game; a tie at the maximum counts the positive share of the tied patches, so a
    constant map scores exactly the share of positive patches).
  * ``localisation_auc`` — mean over queries of the ROC-AUC separating positive from negative
    patches by similarity (midranks for ties). Queries whose patches are all positive are
    left out of it; queries without a positive patch are left out of both (``n`` counts).

  Chance is not what a map without spatial information scores (``chance_uniform``: the share
  of positive patches, 0.5 for the AUC): a map that lights up every object, whatever the
  phrase, beats that easily — an untrained CLIP does. The question is whether the *phrase*
  picks its object, so the null swaps the maps of the queries of one scene among them
  (``n_permutations`` times): p is one-sided (greater) and ``chance`` is the null's mean.
  Only scenes with two or more queries can swap (``n_swappable`` queries); with none, p = 1.
  95% CI: cluster bootstrap over scenes (a scene's queries are resampled together).

* **Examples** for the figure (``.npz``): a few scenes with their object queries, and a few
  sharp and round shapes with the reference words *kiki* and *bouba* (from the words set:
  ``pseudoword_text`` through the text tower, or ``pseudowords`` clips through the audio tower
  of a model that has one), with the images, maps and region masks.

The patch grid is taken to cover the whole image (square stimuli, as CLIP's processor resizes
and centre-crops them).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import io as avio
from . import stats

log = logging.getLogger("avprobe")

DEFAULTS = {
    "words": "pseudoword_text",
    "object_template": "a {colour} {shape}",
    "min_coverage": 0.1,
    "examples": 4,
    "batch_size": 16,
}
METRICS = ("pointing_game", "localisation_auc")


# ---------------------------------------------------------------------------------------------
# Maps and metrics (pure functions)
# ---------------------------------------------------------------------------------------------


def similarity_map(query: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Cosine similarity of one ``(D,)`` query to every patch of a ``(rows, cols, D)`` grid."""
    grid = np.asarray(grid)
    if grid.ndim != 3 or grid.shape[-1] != np.shape(query)[-1]:
        raise ValueError(f"a patch grid (rows, cols, {np.shape(query)[-1]}) is needed, got {grid.shape}")
    return (stats.l2_normalize(grid) @ stats.l2_normalize(query)).astype(np.float32)


def patch_coverage(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Share of each patch's area inside a ``(H, W)`` mask (values in [0, 1]), for a grid of
    ``rows × cols`` patches covering the whole image (box average)."""
    from PIL import Image

    mask = np.asarray(mask, dtype=np.float32)
    small = Image.fromarray(mask, mode="F").resize((int(cols), int(rows)), Image.Resampling.BOX)
    return np.clip(np.asarray(small, dtype=np.float64), 0.0, 1.0)


def localisation_scores(maps: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query pointing hit and ROC-AUC from ``maps`` and ``positive``, both ``(..., Q, P)``.

    Leading dimensions (e.g. permutations) are kept: returns two ``(..., Q)`` arrays; the AUC
    is NaN for a query with no positive or no negative patch.
    """
    maps = np.asarray(maps, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    top = maps >= maps.max(axis=-1, keepdims=True) - 1e-12 * np.maximum(1.0, np.abs(maps).max(axis=-1, keepdims=True))
    hit = (top & positive).sum(-1) / top.sum(-1)
    ranks = _midranks(maps)
    n_pos = positive.sum(-1)
    n_neg = positive.shape[-1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(-1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    auc = np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
    return hit, auc


def _midranks(x: np.ndarray) -> np.ndarray:
    import scipy.stats

    return scipy.stats.rankdata(x, method="average", axis=-1)


def within_group_permutations(rng: np.random.Generator, n_perm: int, groups: Sequence) -> np.ndarray:
    """``src`` of shape (n_perm, n): item ``i`` takes the map of item ``src[b, i]``, always an
    item of its own group (a group of one keeps its own)."""
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    n = codes.size
    keys = rng.random((int(n_perm), n))
    order = np.lexsort((keys, np.broadcast_to(codes, (int(n_perm), n))), axis=-1)
    src = np.empty_like(order)
    src[:, np.argsort(codes, kind="stable")] = order
    return src


def localisation_inference(
    maps: np.ndarray,
    positive: np.ndarray,
    groups: Sequence,
    *,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    chunk: int = 50,
) -> list[dict]:
    """Rows (metric, value, ci_low, ci_high, p, n, chance, chance_uniform) for ``(Q, P)``
    maps and positives; ``groups`` gives each query's image.

    A query without positive patches is left out. The null swaps the maps of the queries of
    one image (``within_group_permutations``): a map that only marks where the objects are,
    whatever the phrase, keeps its score under the swaps, so only phrase-specific localisation
    is significant. ``chance`` is the mean of that null; ``chance_uniform`` the score of a
    map without spatial information (share of positive patches; 0.5 for the AUC). The CI is a
    cluster bootstrap over images.
    """
    maps = np.asarray(maps, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    groups = np.asarray(groups)
    if maps.ndim != 2 or maps.shape != positive.shape or groups.shape != maps.shape[:1]:
        raise ValueError(f"maps {maps.shape} and positives {positive.shape} must both be (queries, patches), "
                         f"with one group per query ({groups.shape})")
    keep = positive.any(-1)
    maps, positive, groups = maps[keep], positive[keep], groups[keep]
    rng = np.random.default_rng(seed)
    hit, auc = localisation_scores(maps, positive)
    observed = {"pointing_game": hit, "localisation_auc": auc}
    uniform = {"pointing_game": float(positive.mean(-1).mean()) if len(positive) else float("nan"),
               "localisation_auc": 0.5}

    null = {m: [] for m in METRICS}
    done = 0
    while done < n_permutations:
        k = min(chunk, n_permutations - done)
        src = within_group_permutations(rng, k, groups)
        h, a = localisation_scores(maps[src], np.broadcast_to(positive, (k,) + positive.shape))
        for metric, values in (("pointing_game", h), ("localisation_auc", a)):
            ok = np.isfinite(observed[metric])
            null[metric].append(values[:, ok].mean(-1) if ok.any() else np.full(k, np.nan))
        done += k

    weights = stats.bootstrap_weights(rng, int(n_bootstrap), len(groups), groups=groups)
    rows = []
    for metric in METRICS:
        values = observed[metric]
        ok = np.isfinite(values)
        w = weights * ok
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates = (w @ np.where(ok, values, 0.0)) / w.sum(1)
        value = float(values[ok].mean()) if ok.any() else float("nan")
        lo, hi = stats.bootstrap_ci(replicates)
        nulls = np.concatenate(null[metric]) if null[metric] else np.array([])
        rows.append({
            "metric": metric,
            "value": value,
            "ci_low": lo,
            "ci_high": hi,
            "p": stats.perm_pvalue(value, nulls, alternative="greater"),
            "n": int(ok.sum()),
            "chance": float(np.nanmean(nulls)) if np.isfinite(nulls).any() else float("nan"),
            "chance_uniform": uniform[metric],
            "n_swappable": int(np.sum(pd.Series(groups[ok]).map(pd.Series(groups[ok]).value_counts()) > 1)),
        })
    return rows


# ---------------------------------------------------------------------------------------------
# Queries from the stimulus sets
# ---------------------------------------------------------------------------------------------


def object_queries(scenes: pd.DataFrame, template: str) -> pd.DataFrame:
    """One query per distinct (colour, shape) of each scene: image_id, query, objects (the
    indices of the scene's objects it names)."""
    rows = []
    for scene in scenes.to_dict("records"):
        groups: dict[tuple[str, str], list[int]] = {}
        for k, o in enumerate(json.loads(scene["objects"])):
            groups.setdefault((o["colour"], o["shape"]), []).append(k)
        for (colour, shape), indices in groups.items():
            rows.append({"image_id": str(scene["stimulus_id"]),
                         "query": template.format(colour=colour, shape=shape),
                         "colour": colour, "shape": shape, "objects": indices})
    return pd.DataFrame(rows, columns=["image_id", "query", "colour", "shape", "objects"])


def reference_words(words: pd.DataFrame, names: Sequence[str] = ("kiki", "bouba")) -> pd.DataFrame:
    """The rows of the reference words (first template or voice of each), in ``names`` order."""
    df = words.copy()
    df["_word"] = df["word"].astype(str).str.lower()
    if "is_reference" in df:
        df = df[df["is_reference"].fillna(False).astype(bool)]
    out = []
    for name in names:
        sub = df[df["_word"] == name.lower()]
        if "template_index" in sub:
            sub = sub.sort_values("template_index")
        if not sub.empty:
            out.append(sub.iloc[0])
    if not out:
        raise ValueError(f"the words manifest has none of the reference words {list(names)}")
    return pd.DataFrame(out).drop(columns="_word").reset_index(drop=True)


def example_shapes(shapes: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` shapes, alternately the sharpest sharp and the roundest round ones."""
    picks = []
    by_label = {}
    for label, ascending in (("sharp", False), ("round", True)):
        sub = shapes[shapes["label"] == label]
        if "sharpness" in sub:
            sub = sub.sort_values("sharpness", ascending=ascending)
        by_label[label] = list(sub.index)
    for k in range(n):
        label = ("sharp", "round")[k % 2]
        pool = by_label[label]
        if k // 2 < len(pool):
            picks.append(pool[k // 2])
    return shapes.loc[picks].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def _batched(adapter, items: list, batch_size: int, fn, desc: str) -> list:
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=len(items), desc=desc, unit="item", file=sys.stderr, mininterval=5.0, ascii=True) as bar:
        for lo in range(0, len(items), batch_size):
            out.extend(fn(items[lo:lo + batch_size]))
            bar.update(min(batch_size, len(items) - lo))
    return out


def _query_vectors(adapter, tower: str, items: list, batch_size: int) -> np.ndarray:
    vectors = _batched(adapter, items, batch_size,
                       lambda batch: list(adapter.embed(tower, batch, layers=["joint"])["joint"]),
                       f"{adapter.name}/{tower} queries")
    return np.stack(vectors)


def _thumbnail(image: np.ndarray, size: int = 224) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(image)
    if max(img.size) > size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def run_dense(
    scenes_manifest: str | Path,
    shapes_manifest: str | Path,
    words_manifest: str | Path,
    table_out: str | Path,
    examples_out: str | Path,
    *,
    model: str,
    spec: Mapping,
    model_dir: str | Path | None = None,
    cfg: Mapping | None = None,
    words_set: str = "pseudoword_text",
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    device: str = "auto",
) -> pd.DataFrame:
    """Localisation table and example maps of one model (``analysis = "dense"``).

    ``cfg``: ``object_template``, ``min_coverage``, ``examples``, ``batch_size`` (see
    :data:`DEFAULTS`). Table columns: the standard ones (set ``scenes``, layer ``joint``) plus
    chance (the phrase-swap null's mean), chance_uniform, n_swappable, n_images, grid
    ("rows×cols"), min_coverage, template, kind.
    """
    from ..extract import load_audio, load_image
    from ..models import load_model
    from ..sets import SET_MODALITY
    from ..stimuli.scenes import object_mask

    cfg = {**DEFAULTS, **{k: v for k, v in dict(cfg or {}).items() if v is not None}}
    batch_size = max(int(cfg["batch_size"]), 1)
    adapter = load_model(model, dict(spec), model_dir=model_dir, device=device)
    word_tower = SET_MODALITY.get(words_set, "text")
    for tower in ("image", "text", word_tower):
        if tower not in adapter.towers:
            raise ValueError(f"dense maps with {model!r} need its {tower!r} tower (towers: {list(adapter.towers)})")
    if not getattr(adapter, "supports_dense", False):
        adapter.dense("image", [])  # raises the family's clear error
    start = time.perf_counter()

    scenes = avio.read_manifest(scenes_manifest).reset_index(drop=True)
    queries = object_queries(scenes, str(cfg["object_template"]))
    if queries.empty:
        raise ValueError(f"{scenes_manifest}: no scene objects to localise")
    images = {r["stimulus_id"]: load_image(avio.resolve_stimulus_path(scenes_manifest, r["path"]))
              for r in scenes.to_dict("records")}
    ids = list(images)
    grids = dict(zip(ids, _batched(adapter, [images[i] for i in ids], batch_size,
                                   lambda batch: adapter.dense("image", batch), f"{model}/scenes patches")))
    q_vecs = _query_vectors(adapter, "text", queries["query"].tolist(), batch_size)
    rows_n, cols_n = next(iter(grids.values())).shape[:2]
    scene_rows = scenes.set_index("stimulus_id")
    maps, positive, masks = [], [], []
    for q, vec in zip(queries.to_dict("records"), q_vecs):
        grid = grids[q["image_id"]]
        maps.append(similarity_map(vec, grid).ravel())
        mask = object_mask(scene_rows.loc[q["image_id"]].to_dict(), q["objects"])
        masks.append(mask)
        positive.append(patch_coverage(mask >= 0.5, *grid.shape[:2]).ravel() >= float(cfg["min_coverage"]))
    maps, positive = np.stack(maps), np.stack(positive)
    rows = localisation_inference(maps, positive, queries["image_id"].to_numpy(),
                                  n_bootstrap=n_bootstrap, n_permutations=n_permutations, seed=seed)
    layers = adapter.layers("image")
    for r in rows:
        r.update(analysis="dense", set="scenes", model=model, layer="joint",
                 layer_index=layers.index("joint") if "joint" in layers else len(layers) - 1,
                 n_images=len(ids), grid=f"{rows_n}x{cols_n}", min_coverage=float(cfg["min_coverage"]),
                 template=str(cfg["object_template"]), kind=adapter.kind)
    table = avio.tidy_table(rows)
    for r in rows:
        log.info("dense %s: %s = %.3f [%.3f, %.3f] (phrase-swap chance %.3f, p = %.4f; no-map chance "
                 "%.3f; %d queries on %d scenes, %s patches)", model, r["metric"], r["value"], r["ci_low"],
                 r["ci_high"], r["chance"], r["p"], r["chance_uniform"], r["n"], len(ids), r["grid"])

    # Examples for the figure: the first scenes with all their queries; shapes × kiki/bouba.
    n_examples = int(cfg["examples"])
    hit, auc = localisation_scores(maps, positive)
    ex_ids = ids[:n_examples]
    sel = queries.index[queries["image_id"].isin(ex_ids).to_numpy() & positive.any(1)].to_numpy()
    shapes = avio.read_manifest(shapes_manifest)
    shape_rows = example_shapes(shapes, n_examples)
    shape_images = [load_image(avio.resolve_stimulus_path(shapes_manifest, p)) for p in shape_rows["path"]]
    shape_grids = adapter.dense("image", shape_images) if shape_images else []
    refs = reference_words(avio.read_manifest(words_manifest))
    if word_tower == "audio":
        items = [load_audio(avio.resolve_stimulus_path(words_manifest, p)) for p in refs["path"]]
    else:
        items = refs["text"].astype(str).tolist()
    word_vecs = _query_vectors(adapter, word_tower, items, batch_size)
    word_maps = np.array([[similarity_map(v, g) for g in shape_grids] for v in word_vecs],
                         dtype=np.float32).reshape(len(word_vecs), len(shape_grids), rows_n, cols_n)
    with avio.atomic_path(examples_out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                model=np.array(model),
                kind=np.array(adapter.kind),
                grid=np.array([rows_n, cols_n]),
                scene_ids=np.array(ex_ids, dtype=str),
                scene_images=np.stack([_thumbnail(images[i]) for i in ex_ids]),
                query_image=np.array([ex_ids.index(i) for i in queries.loc[sel, "image_id"]], dtype=np.int64),
                query_text=queries.loc[sel, "query"].to_numpy(dtype=str),
                query_maps=maps[sel].reshape(len(sel), rows_n, cols_n).astype(np.float32),
                query_masks=np.stack([masks[i] >= 0.5 for i in sel]) if len(sel) else np.zeros((0, 1, 1), bool),
                query_hit=hit[sel].astype(np.float32),
                query_auc=auc[sel].astype(np.float32),
                shape_ids=shape_rows["stimulus_id"].to_numpy(dtype=str),
                shape_labels=shape_rows["label"].to_numpy(dtype=str),
                shape_images=np.stack([_thumbnail(x) for x in shape_images]) if shape_images else np.zeros((0, 1, 1, 3), np.uint8),
                word_text=refs["word"].to_numpy(dtype=str),
                word_form=np.array("speech" if word_tower == "audio" else "text"),
                word_maps=word_maps,
            )
    avio.write_parquet(table, table_out)
    log.info("dense %s: %d scenes, %d queries in %.1f s", model, len(ids), len(queries), time.perf_counter() - start)
    return table
