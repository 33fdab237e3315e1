"""Cross-modal retrieval (seed 003, BrewCLIP; conventions of CLIP_benchmark) and WER.

* Embeddings are L2-normalised; score = dot product.
* Caption query (speech→image, text→image): a hit at k when its image is in the top k;
  averaged over captions. Image query (image→speech, image→text): a hit when *any* of that
  image's captions is in the top k; averaged over images (images without captions skipped).
* Ties (scores equal to 1e-10): a query's recall@k is its **expected** value when tied gallery items are ordered at
  random: with ``g`` non-matching items scoring strictly above the best match, ``t`` tied
  non-matching items and ``m`` tied matching items, the hit probability is
  ``1 − C(t, k−g) / C(t+m, k−g)`` (0 when g ≥ k). Without ties this is the usual top-k hit;
  with all-equal scores it is the chance rate. Scores are computed a chunk of queries at a
  time, so a 25k × 5k score matrix never exists at once.
* ``word_error_rate``: corpus WER = (substitutions + deletions + insertions) / reference
  words, by word-level Levenshtein distance, after lower-casing and removing punctuation
  other than apostrophes inside words (``normalize=False`` keeps the text as is).

``run_retrieval`` modes (``mode`` column): ``end_to_end`` (spoken captions → the model's
audio tower), ``cascade`` (ASR transcripts → text tower), ``text`` (ground-truth captions →
text tower), ``fusion`` (sum of the L2-normalised embeddings of two query files, e.g.
end-to-end speech + cascade text, as in BrewCLIP). The direction names the query side:
``text`` for mode text, ``speech`` otherwise (``speech→image`` / ``image→speech``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .. import io as avio
from .. import validate
from . import stats

log = logging.getLogger("avprobe")

MODES = ("end_to_end", "cascade", "text", "fusion")
HYPOTHESIS_COLUMNS = ("asr_text", "hypothesis")
#: The reference of the WER row: ``reference_text`` (a transcript manifest, whose ``text`` is
#: the transcript itself, see avprobe.cascade), else ``text``.
REFERENCE_COLUMNS = ("reference_text", "text")


#: Scores are rounded to this many decimals before ranking, so items whose scores differ only
#: by floating-point summation order (chunked vs whole products) count as tied.
SCORE_DECIMALS = 10


def _as_csr(positives, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of each query's matching gallery items."""
    if isinstance(positives, np.ndarray) and positives.ndim == 1 and positives.dtype != object:
        if positives.size != n_queries:
            raise ValueError("one gallery index per query expected")
        return np.arange(n_queries + 1), positives.astype(np.int64)
    lists = [np.atleast_1d(np.asarray(p, dtype=np.int64)) for p in positives]
    if len(lists) != n_queries:
        raise ValueError("one list of gallery indices per query expected")
    indptr = np.r_[0, np.cumsum([l.size for l in lists])]
    return indptr, (np.concatenate(lists) if lists else np.zeros(0, np.int64))


def _hit_probability(greater: np.ndarray, tied_neg: np.ndarray, tied_pos: np.ndarray, k: int) -> np.ndarray:
    """P(hit@k) under random order of ties: 1 − Π_{i<r} (t−i)/(t+m−i), r = k − greater."""
    r = k - greater
    out = np.zeros(greater.shape, dtype=np.float64)
    alive = r > 0
    prob_all_neg = np.ones(greater.shape)
    for i in range(int(r.max(initial=0))):
        step = alive & (i < r)
        num = np.maximum(tied_neg - i, 0).astype(np.float64)
        den = np.maximum(tied_neg + tied_pos - i, 1).astype(np.float64)
        prob_all_neg = np.where(step, prob_all_neg * num / den, prob_all_neg)
    out[alive] = 1.0 - prob_all_neg[alive]
    return out


def recall_at_k(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    query_to_gallery,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
    per_query: bool = False,
):
    """Recall@k of each k for queries against a gallery (L2-normalised dot products).

    ``query_to_gallery``: an int array with the matching gallery index of each query, or a
    sequence with an array of matching gallery indices per query (image → its captions).
    Returns ``{k: recall}``, or with ``per_query=True`` also the (Q, len(ks)) matrix of each
    query's expected hit. Queries without a match are NaN and left out of the mean.
    """
    q = stats.l2_normalize(query_emb)
    g = stats.l2_normalize(gallery_emb)
    nq = q.shape[0]
    indptr, indices = _as_csr(query_to_gallery, nq)
    counts = np.diff(indptr)
    ks = [int(k) for k in ks]
    hits = np.full((nq, len(ks)), np.nan)
    chunk = max(1, min(int(chunk), int(2e7 // max(1, g.shape[0]))))  # ≤ 160 MB of scores
    for s in range(0, nq, chunk):
        e = min(nq, s + chunk)
        scores = np.round(q[s:e] @ g.T, SCORE_DECIMALS)  # (c, G)
        rows = np.repeat(np.arange(e - s), counts[s:e])
        cols = indices[indptr[s] : indptr[e]]
        pos_scores = scores[rows, cols]
        has = counts[s:e] > 0
        best = np.full(e - s, -np.inf, dtype=scores.dtype)
        np.maximum.at(best, rows, pos_scores)
        is_pos = np.zeros(scores.shape, dtype=bool)
        is_pos[rows, cols] = True
        above = scores > best[:, None]
        equal = scores == best[:, None]
        greater = (above & ~is_pos).sum(1)
        tied_neg = (equal & ~is_pos).sum(1)
        tied_pos = (equal & is_pos).sum(1)
        for j, k in enumerate(ks):
            h = _hit_probability(greater, tied_neg, tied_pos, k)
            hits[s:e, j] = np.where(has, h, np.nan)
    recall = {k: float(np.nanmean(hits[:, j])) if np.isfinite(hits[:, j]).any() else float("nan")
              for j, k in enumerate(ks)}
    return (recall, hits) if per_query else recall


# ----------------------------------------------------------------------------- WER
_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation (keeping apostrophes inside words), squeeze spaces."""
    return " ".join(_PUNCT.sub(" ", str(text).lower()).split())


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (row-vectorised DP)."""
    ref, hyp = list(ref), list(hyp)
    if not ref:
        return len(hyp)
    if not hyp:
        return len(ref)
    hyp_arr = np.array(hyp, dtype=object)
    prev = np.arange(len(hyp) + 1)
    idx = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, start=1):
        cost = (hyp_arr != r).astype(np.int64)
        cur = np.empty_like(prev)
        cur[0] = i
        # substitution / match and deletion, then insertions by a running minimum
        cur[1:] = np.minimum(prev[:-1] + cost, prev[1:] + 1)
        cur = np.minimum.accumulate(cur - idx) + idx
        prev = cur
    return int(prev[-1])


def word_error_rate(refs: Iterable[str], hyps: Iterable[str], normalize: bool = True) -> float:
    """Corpus word error rate: total word edits / total reference words."""
    edits = words = 0
    for r, h in zip(refs, hyps, strict=True):
        if normalize:
            r, h = normalize_text(r), normalize_text(h)
        rt, ht = str(r).split(), str(h).split()
        edits += edit_distance(rt, ht)
        words += len(rt)
    return float(edits / words) if words else float("nan")


# ----------------------------------------------------------------------------- files → table
def _chance_caption(n_gallery: int, k: int) -> float:
    return min(k, n_gallery) / n_gallery if n_gallery else float("nan")


def _chance_image(n_captions: int, n_pos: np.ndarray, k: int) -> float:
    """Mean over images of 1 − C(N−m, k)/C(N, k): some of its m captions in a random top k."""
    n_pos = np.asarray(n_pos, dtype=float)
    prob = np.ones_like(n_pos)
    for i in range(min(k, n_captions)):
        prob *= np.maximum(n_captions - n_pos - i, 0) / (n_captions - i)
    return float(np.mean(1 - prob)) if n_pos.size else float("nan")


def _read_layer(path: str | Path, layer: str) -> tuple[list[str], np.ndarray]:
    """A layer checked like every analysis input (non-empty, finite), except that a constant
    layer is allowed here: its rankings are one fixed order or all ties, whose (expected)
    recall is the chance rate — e.g. the identical transcripts of an untrained recogniser."""
    ids, x = avio.read_layer(path, layer)
    if x.ndim == 2 and x.shape[0] > 1 and x.shape[1] and np.isfinite(x).all() and not np.ptp(x, axis=0).any():
        log.warning("%s: layer %r is constant (all %d embeddings identical); its recall is chance",
                    path, layer, x.shape[0])
        return ids, x
    return validate.read_checked_layer(path, layer)


def _layers(queries: Sequence[str | Path], gallery: str | Path, layer: str | None) -> list[tuple[str, int]]:
    g_layers = dict(avio.embedding_layers(gallery))
    q_layers = [dict(avio.embedding_layers(p)) for p in queries]
    if layer:
        for path, have in zip([*queries, gallery], [*q_layers, g_layers]):
            if layer not in have:
                raise KeyError(f"{path}: no layer {layer!r} (the shared space's layer); it has {list(have)}."
                               " Rebuild it with the model's extraction rule")
        names = [layer]
    else:
        names = [n for n in q_layers[0] if n in g_layers and all(n in q for q in q_layers)]
        names.sort(key=lambda n: (n != "joint", q_layers[0][n]))
    return [(n, q_layers[0][n]) for n in names if n in g_layers and all(n in q for q in q_layers)]


def run_retrieval(
    queries_manifest: str | Path,
    queries_embeddings: str | Path | Sequence[str | Path],
    gallery_manifest: str | Path,
    gallery_embeddings: str | Path,
    output: str | Path | None = None,
    *,
    name: str,
    mode: str,
    model: str,
    queries: str | Sequence[str],
    gallery: str,
    seed: int = 0,
    layer: str | None = None,
    space: str | None = None,
    ks: Sequence[int] = (1, 5, 10),
    n_bootstrap: int = 1000,
    chunk: int = 1024,
) -> pd.DataFrame:
    """Recall@k both ways (+ WER for ASR transcripts) as a tidy table (``analysis = "retrieval"``).

    ``queries_embeddings`` is one file, or two for ``mode = "fusion"`` (their L2-normalised
    embeddings are summed per stimulus id; ids absent from either are dropped). The queries
    manifest maps each caption to its gallery item by ``image_id``. Layers: ``layer`` if given
    (the layer of the shared space ``space``, as :func:`avprobe.plan.retrieval_space` resolves
    it), else every layer present in all files with equal widths (an explicitly *unaligned*
    request: hidden layers of different towers share no trained space). The ``space`` column
    names the space of each row: ``space`` for its layer, ``unaligned`` for any other layer.

    Columns: standard ones (``set`` = query set(s), metric ``R@1``…, value = recall in [0, 1],
    CI = bootstrap over queries, ``n`` = queries) plus name, mode, direction, k, gallery,
    chance (recall of a random ranking), n_gallery; and a ``wer`` row when the queries manifest
    has a reference (``reference_text``, else ``text``) and an ASR output (``asr_text`` or
    ``hypothesis``) column.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    q_paths = [queries_embeddings] if isinstance(queries_embeddings, (str, Path)) else list(queries_embeddings)
    if mode == "fusion" and len(q_paths) != 2:
        raise ValueError("fusion needs two query embeddings files")
    q_set = queries if isinstance(queries, str) else "+".join(queries)
    q_manifest = queries_manifest if isinstance(queries_manifest, (str, Path)) else queries_manifest[0]
    qm = avio.read_manifest(q_manifest)
    for p in q_paths:
        validate.analysis_manifest(qm, p, manifest_path=q_manifest)
    gm = validate.analysis_manifest(avio.read_manifest(gallery_manifest), gallery_embeddings,
                                    manifest_path=gallery_manifest)
    if "image_id" not in qm.columns:
        raise KeyError("queries manifest needs an 'image_id' column")
    image_of = qm.assign(stimulus_id=qm["stimulus_id"].astype(str)).set_index("stimulus_id")["image_id"].astype(str)
    prefix = "text" if mode == "text" else "speech"
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    base = dict(analysis="retrieval", set=q_set, model=model, name=name, mode=mode, gallery=gallery)

    for lname, lindex in _layers(q_paths, gallery_embeddings, layer):
        row_space = space if (space is not None and lname == layer) else "unaligned"
        g_ids, g_x = _read_layer(gallery_embeddings, lname)
        g_ids = pd.Index([str(i) for i in g_ids])
        parts = []
        for p in q_paths:
            ids, x = _read_layer(p, lname)
            parts.append(pd.DataFrame(stats.l2_normalize(x), index=[str(i) for i in ids]))
        common = parts[0].index
        for part in parts[1:]:
            common = common.intersection(part.index, sort=False)
        q_x = sum(part.loc[common].to_numpy() for part in parts)
        q_ids = pd.Index(common)
        if q_x.shape[1] != g_x.shape[1]:
            log.info("retrieval %s: layer %s skipped (widths %d vs %d)", name, lname, q_x.shape[1], g_x.shape[1])
            continue
        img = g_ids.get_indexer(image_of.reindex(q_ids).to_numpy())
        ok = img >= 0
        if not ok.all():
            log.warning("retrieval %s: %d captions have no gallery image; dropped", name, int((~ok).sum()))
        q_x, q_ids, img = q_x[ok], q_ids[ok], img[ok]
        # caption → image
        rec, hits = recall_at_k(q_x, g_x, img, ks, chunk, per_query=True)
        w = stats.bootstrap_weights(rng, n_bootstrap, len(q_ids)).astype(float)
        for j, k in enumerate(ks):
            lo, hi = stats.bootstrap_ci((w @ hits[:, j]) / w.sum(1))
            rows.append(dict(base, layer=lname, layer_index=lindex, space=row_space, metric=f"R@{k}", value=rec[k],
                             ci_low=lo, ci_high=hi, n=len(q_ids), direction=f"{prefix}→image", k=k,
                             chance=_chance_caption(len(g_ids), k), n_gallery=len(g_ids)))
        # image → captions
        caps = pd.Series(np.arange(len(q_ids))).groupby(img).apply(np.asarray)
        imgs = caps.index.to_numpy()
        rec, hits = recall_at_k(g_x[imgs], q_x, list(caps.to_numpy()), ks, chunk, per_query=True)
        w = stats.bootstrap_weights(rng, n_bootstrap, len(imgs)).astype(float)
        n_pos = caps.map(len).to_numpy()
        for j, k in enumerate(ks):
            lo, hi = stats.bootstrap_ci((w @ hits[:, j]) / w.sum(1))
            rows.append(dict(base, layer=lname, layer_index=lindex, space=row_space, metric=f"R@{k}", value=rec[k],
                             ci_low=lo, ci_high=hi, n=len(imgs), direction=f"image→{prefix}", k=k,
                             chance=_chance_image(len(q_ids), n_pos, k), n_gallery=len(q_ids)))
    hyp_col = next((c for c in HYPOTHESIS_COLUMNS if c in qm.columns), None)
    ref_col = next((c for c in REFERENCE_COLUMNS if c in qm.columns), None)
    if hyp_col and ref_col:
        ok = qm[hyp_col].notna() & qm[ref_col].notna()
        refs, hyps = qm.loc[ok, ref_col].tolist(), qm.loc[ok, hyp_col].tolist()
        per = np.array([edit_distance(normalize_text(r).split(), normalize_text(h).split()) for r, h in zip(refs, hyps)], float)
        nw = np.array([len(normalize_text(r).split()) for r in refs], float)
        w = stats.bootstrap_weights(rng, n_bootstrap, len(refs)).astype(float)
        lo, hi = stats.bootstrap_ci((w @ per) / (w @ nw)) if len(refs) else (np.nan, np.nan)
        rows.append(dict(base, layer="", layer_index=-1, metric="wer",
                         value=word_error_rate(refs, hyps), ci_low=lo, ci_high=hi, n=int(ok.sum()),
                         direction="asr", k=np.nan, chance=np.nan, n_gallery=np.nan))
    table = avio.tidy_table(rows)
    if output is not None:
        avio.write_parquet(table, output)
    return table
