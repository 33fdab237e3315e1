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

**Queries from speech** (``query = "speech"``, for a model whose audio tower has dense
features in a space with the image tower, e.g. DenseAV): the *spoken* captions of each scene
(the ``captions`` set) are the queries. A map is computed from the caption's dense audio frames
``(T, D)`` and the image's patch grid: the similarity volume ``(T, rows, cols, heads)`` (the
adapter's own similarity: ``dense_similarity = "dot"`` for DenseAV's inner products, cosine
otherwise; ``dense_heads`` heads, default 1), **max over heads**, then the **mean over the
frames** of the span (DenseAV's aggregation without the pooling over space, which the map
keeps). Three units (``query_unit`` column; each its own rows and its own phrase-swap null):

* ``word``: each colour or shape word of a caption, over the frames it is spoken in (word
  boundaries from the TTS, the manifest's ``word_times``; a frame counts when its centre lies in
  the word); its region is every object of the scene with that colour, or that shape;
* ``phrase``: a colour word directly followed by a shape word ("red circle"), region the
  objects with both;
* ``caption``: the whole clip; region the union of the objects its colour and shape words name
  (every object for a caption that names none, e.g. "there are three shapes"). This is the only
  unit when word times are unknown.

Frames are taken to cover the clip evenly (frame ``i`` of ``T`` spans ``[i, i + 1) · duration / T``).
The kiki/bouba examples use the same maps over the spoken reference words (all frames).
With ``query = "text"`` (the default for models with a text tower) everything is as above, and
the table rows say ``query_form`` text, ``query_unit`` phrase.

The patch grid is taken to cover the whole image (square stimuli, as CLIP's processor resizes
and centre-crops them).
"""

from __future__ import annotations

import json
import logging
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
    "query": "text",
    "object_template": "a {colour} {shape}",
    "min_coverage": 0.1,
    "examples": 4,
    "batch_size": 16,
}
METRICS = ("pointing_game", "localisation_auc")
QUERY_FORMS = ("text", "speech")
#: Units of speech queries, in the order of the table's rows.
SPEECH_UNITS = ("word", "phrase", "caption")


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


def _content(word: str) -> tuple[str, str] | None:
    """``("colour", name)`` or ``("shape", name)`` for a colour or shape word (plurals too)."""
    from ..stimuli.scenes import COLOURS, SHAPES

    w = str(word).lower().strip(".,;:!?\"'")
    if w in COLOURS:
        return ("colour", w)
    for shape in SHAPES:
        if w in (shape, shape + "s"):
            return ("shape", shape)
    return None


def _matching(objects: list[dict], **attrs) -> list[int]:
    return [k for k, o in enumerate(objects) if all(o[a] == v for a, v in attrs.items())]


def speech_queries(captions: pd.DataFrame, scenes: pd.DataFrame) -> pd.DataFrame:
    """The speech queries of the spoken captions: one row per (caption, unit, span).

    Columns: image_id, caption_id, unit (word | phrase | caption), query (the words, or the
    caption), caption (its text), start, end (seconds in the clip; NaN for a whole caption),
    objects (indices of the scene's objects the span names). Spans that name no object of the
    scene are left out. ``word_times`` (JSON, :mod:`avprobe.stimuli.word_times`) gives the words
    and their times; a caption without them gives its ``caption`` row only.
    """
    from ..stimuli.word_times import from_json

    objects_of = {str(r["stimulus_id"]): json.loads(r["objects"]) for r in scenes.to_dict("records")}
    rows = []
    for cap in captions.to_dict("records"):
        image_id = str(cap["image_id"])
        if image_id not in objects_of:
            continue
        objects = objects_of[image_id]
        base = {"image_id": image_id, "caption_id": str(cap["stimulus_id"]), "caption": str(cap["text"])}
        named: set[int] = set()
        for token in str(cap["text"]).split():
            c = _content(token)
            if c is not None:
                named.update(_matching(objects, **{c[0]: c[1]}))
        times = from_json(cap.get("word_times"))
        for i, w in enumerate(times):
            c = _content(w["word"])
            if c is None:
                continue
            indices = _matching(objects, **{c[0]: c[1]})
            if indices:
                rows.append({**base, "unit": "word", "query": c[1] if c[0] == "colour" else str(w["word"]).lower(),
                             "start": float(w["start"]), "end": float(w["end"]), "objects": indices})
            nxt = _content(times[i + 1]["word"]) if i + 1 < len(times) else None
            if c[0] == "colour" and nxt is not None and nxt[0] == "shape":
                indices = _matching(objects, colour=c[1], shape=nxt[1])
                if indices:
                    rows.append({**base, "unit": "phrase", "query": f"{c[1]} {times[i + 1]['word'].lower()}",
                                 "start": float(w["start"]), "end": float(times[i + 1]["end"]), "objects": indices})
        rows.append({**base, "unit": "caption", "query": str(cap["text"]), "start": np.nan, "end": np.nan,
                     "objects": sorted(named) if named else list(range(len(objects)))})
    columns = ["image_id", "caption_id", "unit", "query", "caption", "start", "end", "objects"]
    out = pd.DataFrame(rows, columns=columns)
    order = {u: i for i, u in enumerate(SPEECH_UNITS)}
    return out.sort_values("unit", key=lambda u: u.map(order), kind="stable").reset_index(drop=True)


def dense_volume(frames: np.ndarray, grid: np.ndarray, heads: int = 1, similarity: str = "cosine") -> np.ndarray:
    """``(T, rows, cols, heads)`` similarities of ``(T, D)`` query frames to a ``(rows, cols, D)``
    patch grid; head ``k`` compares channels ``[k D/K, (k+1) D/K)``. ``similarity``: ``cosine``
    (per head, vectors L2-normalised) or ``dot`` (raw inner products, DenseAV's own)."""
    frames, grid = np.asarray(frames, np.float64), np.asarray(grid, np.float64)
    if frames.ndim != 2 or grid.ndim != 3 or frames.shape[1] != grid.shape[2] or frames.shape[1] % heads:
        raise ValueError(f"query frames (T, D) {frames.shape} and a patch grid (rows, cols, D) {grid.shape} with D "
                         f"divisible by {heads} heads are needed")
    t, d = frames.shape
    a = frames.reshape(t, heads, d // heads)
    v = grid.reshape(grid.shape[0], grid.shape[1], heads, d // heads)
    if similarity == "cosine":
        a, v = stats.l2_normalize(a), stats.l2_normalize(v)
    elif similarity != "dot":
        raise ValueError(f"similarity {similarity!r} is not cosine or dot")
    return np.einsum("tkc,rwkc->trwk", a, v).astype(np.float32)


def frame_selection(n_frames: int, duration: float, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Indices of the frames (evenly covering ``duration`` seconds) whose centre lies in
    ``[start, end)``; all frames when the span is not given; the frame under the span's middle
    when no centre falls inside it."""
    if start is None or end is None or not np.isfinite(start) or not np.isfinite(end):
        return np.arange(n_frames)
    centres = (np.arange(n_frames) + 0.5) * duration / n_frames
    inside = np.flatnonzero((centres >= start) & (centres < end))
    if inside.size:
        return inside
    middle = 0.5 * (start + end)
    return np.array([min(n_frames - 1, max(0, int(middle * n_frames / max(duration, 1e-9))))])


def speech_map(volume: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
    """A ``(rows, cols)`` map from a ``(T, rows, cols, heads)`` volume: max over heads, then the
    mean over the selected frames (all by default)."""
    v = np.asarray(volume, np.float64)
    if frames is not None:
        v = v[np.asarray(frames)]
    return v.max(axis=-1).mean(axis=0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def _batched(adapter, items: list, batch_size: int, fn, desc: str) -> list:
    from ..runtime import Progress

    out = []
    with Progress(len(items), desc, unit="item") as bar:
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


def _adapter_similarity(adapter) -> tuple[int, str]:
    """How an adapter compares dense features: ``(heads, "cosine" | "dot")``."""
    return int(getattr(adapter, "dense_heads", 1) or 1), str(getattr(adapter, "dense_similarity", "cosine"))


def _localise_text(adapter, queries: pd.DataFrame, grids: dict, batch_size: int) -> list[np.ndarray]:
    q_vecs = _query_vectors(adapter, "text", queries["query"].tolist(), batch_size)
    return [similarity_map(vec, grids[q["image_id"]]) for q, vec in zip(queries.to_dict("records"), q_vecs)]


def _clips(manifest, paths: Sequence[str]) -> list[tuple[np.ndarray, int]]:
    from ..extract import load_audio

    return [load_audio(avio.resolve_stimulus_path(manifest, p)) for p in paths]


def _speech_frames(adapter, manifest, rows: pd.DataFrame, batch_size: int, desc: str) -> tuple[list, list]:
    """Dense audio frames ``(T, D)`` and durations (s) of the clips of ``rows``."""
    clips = _clips(manifest, rows["path"].tolist())
    frames = _batched(adapter, clips, batch_size, lambda batch: adapter.dense("audio", batch), desc)
    return frames, [len(w) / float(rate) for w, rate in clips]


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
    query: str = "text",
    captions_manifest: str | Path | None = None,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    device: str = "auto",
) -> pd.DataFrame:
    """Localisation table and example maps of one model (``analysis = "dense"``).

    ``query``: ``text`` (object phrases through the text tower) or ``speech`` (the spoken
    captions of ``captions_manifest`` through the audio tower's dense frames; see the module
    docstring). ``cfg``: ``object_template``, ``min_coverage``, ``examples``, ``batch_size`` (see
    :data:`DEFAULTS`). Table columns: the standard ones (set ``scenes``, layer ``joint``) plus
    query_form, query_unit, chance (the phrase-swap null's mean), chance_uniform, n_swappable,
    n_images, grid ("rows×cols"), min_coverage, template, kind.
    """
    from ..extract import load_image
    from ..models import load_model
    from ..sets import SET_MODALITY
    from ..stimuli.scenes import object_mask

    cfg = {**DEFAULTS, **{k: v for k, v in dict(cfg or {}).items() if v is not None}}
    if query not in QUERY_FORMS:
        raise ValueError(f"dense maps: query must be one of {QUERY_FORMS}, got {query!r}")
    if query == "speech" and captions_manifest is None:
        raise ValueError("dense maps from speech need the spoken captions' manifest (captions_manifest)")
    batch_size = max(int(cfg["batch_size"]), 1)
    adapter = load_model(model, dict(spec), model_dir=model_dir, device=device)
    word_tower = SET_MODALITY.get(words_set, "text")
    query_tower = "text" if query == "text" else "audio"
    for tower in ("image", query_tower, word_tower):
        if tower not in adapter.towers:
            raise ValueError(f"dense maps with {model!r} need its {tower!r} tower (towers: {list(adapter.towers)})")
    if not getattr(adapter, "supports_dense", False):
        adapter.dense("image", [])  # raises the family's clear error
    heads, similarity = _adapter_similarity(adapter)
    start = time.perf_counter()

    scenes = avio.read_manifest(scenes_manifest).reset_index(drop=True)
    if query == "text":
        queries = object_queries(scenes, str(cfg["object_template"])).assign(unit="phrase")
    else:
        captions = avio.read_manifest(captions_manifest).reset_index(drop=True)
        queries = speech_queries(captions, scenes)
    if queries.empty:
        raise ValueError(f"{scenes_manifest}: no scene objects to localise")
    images = {r["stimulus_id"]: load_image(avio.resolve_stimulus_path(scenes_manifest, r["path"]))
              for r in scenes.to_dict("records")}
    ids = list(images)
    grids = dict(zip(ids, _batched(adapter, [images[i] for i in ids], batch_size,
                                   lambda batch: adapter.dense("image", batch), f"{model}/scenes patches")))
    rows_n, cols_n = next(iter(grids.values())).shape[:2]
    if query == "text":
        maps = _localise_text(adapter, queries, grids, batch_size)
    else:
        used = captions[captions["stimulus_id"].astype(str).isin(set(queries["caption_id"]))]
        frames, durations = _speech_frames(adapter, captions_manifest, used, batch_size, f"{model}/captions frames")
        by_caption = dict(zip(used["stimulus_id"].astype(str), zip(frames, durations)))
        volumes: dict = {}
        maps = []
        for q in queries.to_dict("records"):
            key = (q["caption_id"], q["image_id"])
            if key not in volumes:
                volumes[key] = dense_volume(by_caption[q["caption_id"]][0], grids[q["image_id"]], heads, similarity)
            f, duration = by_caption[q["caption_id"]]
            maps.append(speech_map(volumes[key], frame_selection(len(f), duration, q["start"], q["end"])))
    scene_rows = scenes.set_index("stimulus_id")
    flat, positive, masks = [], [], []
    for q, m in zip(queries.to_dict("records"), maps):
        flat.append(np.asarray(m).ravel())
        mask = object_mask(scene_rows.loc[q["image_id"]].to_dict(), q["objects"])
        masks.append(mask)
        positive.append(patch_coverage(mask >= 0.5, rows_n, cols_n).ravel() >= float(cfg["min_coverage"]))
    maps, positive = np.stack(flat), np.stack(positive)
    layers = adapter.layers("image")
    rows = []
    units = [u for u in (SPEECH_UNITS if query == "speech" else ("phrase",)) if (queries["unit"] == u).any()]
    for unit in units:
        sel = (queries["unit"] == unit).to_numpy()
        unit_rows = localisation_inference(maps[sel], positive[sel], queries.loc[sel, "image_id"].to_numpy(),
                                           n_bootstrap=n_bootstrap, n_permutations=n_permutations, seed=seed)
        for r in unit_rows:
            r.update(analysis="dense", set="scenes" if query == "text" else "captions", model=model, layer="joint",
                     layer_index=layers.index("joint") if "joint" in layers else len(layers) - 1,
                     query_form=query, query_unit=unit, n_images=len(ids), grid=f"{rows_n}x{cols_n}",
                     min_coverage=float(cfg["min_coverage"]),
                     template=str(cfg["object_template"]) if query == "text" else "spoken captions",
                     kind=adapter.kind)
        rows += unit_rows
    table = avio.tidy_table(rows)
    for r in rows:
        log.info("dense %s (%s %s): %s = %.3f [%.3f, %.3f] (phrase-swap chance %.3f, p = %.4f; no-map chance "
                 "%.3f; %d queries on %d scenes, %s patches)", model, query, r["query_unit"], r["metric"], r["value"],
                 r["ci_low"], r["ci_high"], r["chance"], r["p"], r["chance_uniform"], r["n"], len(ids), r["grid"])

    # Examples for the figure: the first scenes with their queries of the finest unit there is;
    # shapes × kiki/bouba.
    n_examples = int(cfg["examples"])
    hit, auc = localisation_scores(maps, positive)
    ex_ids = ids[:n_examples]
    ex_unit = units[0]
    sel = queries.index[queries["image_id"].isin(ex_ids).to_numpy() & positive.any(1)
                        & (queries["unit"] == ex_unit).to_numpy()].to_numpy()
    shapes = avio.read_manifest(shapes_manifest)
    shape_rows = example_shapes(shapes, n_examples)
    shape_images = [load_image(avio.resolve_stimulus_path(shapes_manifest, p)) for p in shape_rows["path"]]
    shape_grids = adapter.dense("image", shape_images) if shape_images else []
    refs = reference_words(avio.read_manifest(words_manifest))
    if word_tower == "audio" and query == "speech":
        frames, _ = _speech_frames(adapter, words_manifest, refs, batch_size, f"{model}/reference words")
        word_maps = np.array([[speech_map(dense_volume(f, g, heads, similarity)) for g in shape_grids]
                              for f in frames], dtype=np.float32)
    else:
        items = _clips(words_manifest, refs["path"].tolist()) if word_tower == "audio" \
            else refs["text"].astype(str).tolist()
        word_vecs = _query_vectors(adapter, word_tower, items, batch_size)
        word_maps = np.array([[similarity_map(v, g) for g in shape_grids] for v in word_vecs], dtype=np.float32)
    word_maps = word_maps.reshape(len(refs), len(shape_grids), rows_n, cols_n)
    captions_of = queries["caption"] if "caption" in queries else queries["query"]
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
                query_caption=captions_of.loc[sel].to_numpy(dtype=str),
                query_form=np.array(query),
                query_unit=np.array(ex_unit),
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
