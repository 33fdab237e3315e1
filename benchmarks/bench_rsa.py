"""RSA bootstrap: ours (:func:`avprobe.analysis.rsa.rsa_inference`) vs rsatoolbox, same data.

rsatoolbox's pattern bootstrap (``rsatoolbox.inference.bootstrap_sample_pattern``) draws
patterns with replacement and calls ``RDMs.subsample_pattern``; each resample is then compared
with ``rsatoolbox.rdm.compare``. Here rsatoolbox gets *our* resamples (the same multiplicities
``avprobe.analysis.stats.bootstrap_weights(default_rng(seed), B, n)`` that ``rsa_inference``
draws), expanded to pattern indices and passed to ``subsample_pattern`` — exactly the body of
``bootstrap_sample_pattern`` with its ``np.random.randint`` draw replaced, so the two CIs come
from the same resamples.
"""

from __future__ import annotations

import numpy as np

from common import Context, Section, log, timed, times

SEED = 0


def synthetic_study(n_words: int, voices: int, n_layers: int, dim: int, seed: int = 0):
    """Embeddings of ``n_words × voices`` clips: word latent + voice + noise + label and
    sharpness directions whose strength grows with depth. Returns (layers, labels, sharpness,
    word index of each clip)."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.array(["sharp", "round"]), n_words // 2 + 1)[:n_words]
    sharp = rng.integers(-4, 5, n_words).astype(float) + np.where(label == "sharp", 1.5, -1.5)
    word = np.repeat(np.arange(n_words), voices)
    voice = np.tile(np.arange(voices), n_words)
    layers = []
    for k in range(n_layers):
        depth = (k + 1) / n_layers
        d_lab, d_sh = rng.standard_normal(dim), rng.standard_normal(dim)
        w_lat = rng.standard_normal((n_words, dim))
        v_lat = rng.standard_normal((voices, dim)) * (1.5 - depth)
        x = (w_lat[word] + v_lat[voice] + 0.8 * rng.standard_normal((n_words * voices, dim))
             + 0.4 * depth * np.outer(np.where(label[word] == "sharp", 1.0, -1.0), d_lab)
             + 0.15 * depth * np.outer(sharp[word], d_sh))
        layers.append(x.astype(np.float32))
    return layers, label[word], sharp[word], word


def _refs(labels, sharp):
    from avprobe.analysis import rsa

    return [rsa.label_reference("label", labels), rsa.attribute_reference("sharpness", sharp)]


def _rt_objects(vecs: list[np.ndarray], refs):
    from rsatoolbox.rdm import RDMs

    data = RDMs(np.stack(vecs), dissimilarity_measure="cosine")
    model = RDMs(np.stack([r.vector() for r in refs]), dissimilarity_measure="reference")
    return data, model


def _rt_replicates(data, model, weights: np.ndarray, methods=("spearman",)) -> dict[str, np.ndarray]:
    """rsatoolbox's pattern bootstrap on the given resamples: {method: (B, n_refs, n_layers)}."""
    from rsatoolbox.rdm import compare

    from avprobe.analysis.stats import weights_to_indices

    out = {m: [] for m in methods}
    for w in weights:
        idx = weights_to_indices(w)  # = bootstrap_sample_pattern's pattern_idx, sorted
        ds = data.subsample_pattern("index", idx)
        ms = model.subsample_pattern("index", idx)
        for m in methods:
            out[m].append(compare(ms, ds, m))
    return {m: np.asarray(v) for m, v in out.items()}


def _ci(reps: np.ndarray) -> tuple[float, float]:
    from avprobe.analysis.stats import bootstrap_ci

    return bootstrap_ci(reps)


def run(ctx: Context) -> Section:
    from avprobe.analysis import rsa, stats

    sec = Section("rsa", "RSA bootstrap: ours vs rsatoolbox")
    B = ctx.pick(1000, 200)
    n_words, voices, L, dim = ctx.pick((648, 6, 13, 768), (100, 4, 3, 64))
    n = n_words * voices
    k_boot = 1  # rsatoolbox resamples timed per layer count (one takes ~10-20 s at full size)
    layers, labels, sharp, word = synthetic_study(n_words, voices, L, dim, seed=SEED)
    refs = _refs(labels, sharp)
    sec.say(
        f"Data: synthetic embeddings of {n:,} stimuli ({n_words} pseudowords × {voices} voices"
        + (", the default study's size" if not ctx.quick else "; quick mode — the default study has 648 × 6") +
        f") × {L} layers × {dim} dims, with a sharp/round label and a word-level sharpness score. "
        "RDMs: cosine distance (upper triangles, computed once, given to both). References: `label` "
        "(categorical) and `sharpness` (|Δ|), as the `rsa` rule uses for pseudowords. Comparison: Spearman "
        f"(the default). {B} bootstrap resamples of the stimuli; each stimulus is a unit (`average_by: null`). "
        f"Both use {ctx.threads} BLAS threads. The timed part is inference only: value + 95% bootstrap CI for "
        "every (layer, reference), starting from the RDM vectors."
    )

    # ---------------------------------------------------------------- ours, full size
    t_rdm, vecs = timed(lambda: {str(k): rsa.rdm_vector(x) for k, x in enumerate(layers)})
    log(f"rsa ours: {L} layers × {n} stimuli × {B} bootstraps")
    t_ours, res = timed(rsa.rsa_inference, vecs, refs, comparison="spearman", n_bootstrap=B,
                        n_permutations=0, seed=SEED)

    # ---------------------------------------------------------------- rsatoolbox, measured on a part
    keys = list(vecs)
    probe_layers = [keys[-1], keys[0]]
    data1, model = _rt_objects([vecs[probe_layers[0]]], refs)
    log("rsa rsatoolbox: point estimates")
    from rsatoolbox.rdm import compare

    t_rt_point, rt_point = timed(compare, model, data1, "spearman")  # (n_refs, 1)
    ours_point = np.array([[res[(probe_layers[0], r.name)]["value"]] for r in refs])
    point_diff = float(np.abs(rt_point - ours_point).max())
    weights = stats.bootstrap_weights(np.random.default_rng(SEED), k_boot, n)
    per_boot = {}
    for n_l in (1, 2):
        data_l, _ = _rt_objects([vecs[k] for k in probe_layers[:n_l]], refs)
        log(f"rsa rsatoolbox: {k_boot} bootstrap(s) × {n_l} layer(s) × {n} stimuli")
        t, _ = timed(_rt_replicates, data_l, model, weights)
        per_boot[n_l] = t / k_boot
    c1 = per_boot[2] - per_boot[1]
    c0 = per_boot[1] - c1
    if c1 <= 0 or c0 < 0:  # noise: fall back to "proportional to layers"
        c0, c1 = 0.0, per_boot[2] / 2
    rt_per_boot_full = c0 + c1 * L
    rt_total = B * rt_per_boot_full
    speedup = rt_total / t_ours
    sec.table(
        f"{n:,} stimuli × {L} layers × 2 references, {B} bootstraps (Spearman)",
        ["", "seconds", "how"],
        [
            ["ours: `rsa_inference` (value + CI, all layers × references)", t_ours, "measured"],
            ["rsatoolbox: one bootstrap, 1 layer × 2 references", per_boot[1], f"measured (mean of {k_boot})"],
            ["rsatoolbox: one bootstrap, 2 layers × 2 references", per_boot[2], f"measured (mean of {k_boot})"],
            [f"rsatoolbox: one bootstrap, {L} layers", rt_per_boot_full,
             f"extrapolated linearly in layers: {num_s(c0)} s + {num_s(c1)} s × {L}"],
            [f"rsatoolbox: {B} bootstraps, {L} layers", rt_total, f"extrapolated: {B} × the line above"],
            ["ratio rsatoolbox / ours", times(speedup), "aim ≥ 10×"],
            ["(ours: the {0} RDMs themselves)".format(L), t_rdm, "measured; not in either timing"],
            ["rsatoolbox: point estimates, 1 layer × 2 references (`compare`)", t_rt_point, "measured"],
        ],
    )
    sec.ratio(f"RSA bootstrap, {n:,} stimuli × {L} layers × {B} resamples: rsatoolbox / ours (time)", speedup,
              "≥ 10", f"ours {t_ours:.1f} s measured; rsatoolbox {rt_total:,.0f} s extrapolated from "
              f"{k_boot} resample(s) × 1 and 2 layers")
    sec.say(
        f"Point estimates at full size agree: rsatoolbox `compare(references, layer {probe_layers[0]}, 'spearman')` "
        f"vs ours, both references: max |Δ| = {point_diff:.1e}."
    )

    # ---------------------------------------------------------------- word units (the pipeline's default)
    from avprobe.analysis.rsa import Units, unit_matrix

    import pandas as pd

    ids = [f"s{i}" for i in range(n)]
    units = Units(frame=pd.DataFrame({"unit_id": [f"w{i}" for i in range(n_words)]}), unit="word",
                  members={f"w{i}": [f"s{j}" for j in np.flatnonzero(word == i)] for i in range(n_words)}, n_stimuli=n)
    wvecs = {str(k): rsa.rdm_vector(unit_matrix(units, ids, x)) for k, x in enumerate(layers)}
    first = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
    wrefs = _refs(labels[first], sharp[first])
    log(f"rsa ours: {n_words} word units")
    t_w, wres = timed(rsa.rsa_inference, wvecs, wrefs, comparison="spearman", n_bootstrap=B, n_permutations=0, seed=SEED)
    t_wp, _ = timed(rsa.rsa_inference, wvecs, wrefs, comparison="spearman", n_bootstrap=B, n_permutations=B, seed=SEED)
    wdata, wmodel = _rt_objects(list(wvecs.values()), wrefs)
    k_w = ctx.pick(3, 2)
    log(f"rsa rsatoolbox: {k_w} bootstraps × {L} layers × {n_words} word units")
    t_rw, _ = timed(_rt_replicates, wdata, wmodel, stats.bootstrap_weights(np.random.default_rng(SEED), k_w, n_words))
    rt_w_total = B * t_rw / k_w
    sec.table(
        f"The pipeline's default unit: {n_words} words (each the mean of its {voices} clips) × {L} layers × 2 references",
        ["", "seconds", "how"],
        [
            [f"ours: {B} bootstraps", t_w, "measured"],
            [f"ours: {B} bootstraps + {B} permutations (p-values), as the `rsa` rule runs", t_wp, "measured"],
            [f"rsatoolbox: {B} bootstraps", rt_w_total, f"extrapolated from {k_w} measured resamples × all {L} layers"],
            ["ratio rsatoolbox / ours (bootstraps only)", times(rt_w_total / t_w), ""],
        ],
    )
    sec.ratio(f"RSA bootstrap, {n_words} word units × {L} layers: rsatoolbox / ours (time)", rt_w_total / t_w, "≥ 10",
              f"ours {t_w:.2f} s measured; rsatoolbox {rt_w_total:,.0f} s from {k_w} resamples")

    # ---------------------------------------------------------------- CI agreement, small n, all resamples
    n_ci = ctx.pick(200, 60)
    sub = np.sort(np.random.default_rng(1).choice(n_words, n_ci, replace=False))
    ci_layers = [keys[0], keys[-1]]
    all_cvecs = {k: rsa.upper(rsa.square(wvecs[k], n_words)[np.ix_(sub, sub)]) for k in keys}
    cvecs = {k: all_cvecs[k] for k in ci_layers}
    crefs = _refs(labels[first][sub], sharp[first][sub])
    cdata, cmodel = _rt_objects([cvecs[k] for k in ci_layers], crefs)
    # point estimates of every layer, both comparisons
    adata, _ = _rt_objects(list(all_cvecs.values()), crefs)
    point_all = 0.0
    for method, rt_method in (("pearson", "corr"), ("spearman", "spearman")):
        ours_all = rsa.rsa_inference(all_cvecs, crefs, comparison=method, n_bootstrap=0, n_permutations=0)
        rt_all = compare(cmodel, adata, rt_method)
        point_all = max(point_all, max(abs(ours_all[(k, r.name)]["value"] - rt_all[i, j])
                                       for j, k in enumerate(keys) for i, r in enumerate(crefs)))
    log(f"rsa CI agreement: {n_ci} units × {len(ci_layers)} layers × {B} bootstraps, both tools")
    weights = stats.bootstrap_weights(np.random.default_rng(SEED), B, n_ci)
    t_rt_ci, reps = _timed_reps(cdata, cmodel, weights)
    rows = []
    worst = {"spearman": 0.0, "pearson": 0.0}
    for method, rt_method in (("pearson", "corr"), ("spearman", "spearman")):
        ours = rsa.rsa_inference(cvecs, crefs, comparison=method, n_bootstrap=B, n_permutations=0, seed=SEED)
        point = compare(cmodel, cdata, rt_method)
        for j, k in enumerate(ci_layers):
            for i, r in enumerate(crefs):
                o = ours[(k, r.name)]
                lo, hi = _ci(reps[rt_method][:, i, j])
                d = max(abs(o["ci_low"] - lo), abs(o["ci_high"] - hi))
                worst[method] = max(worst[method], d)
                rows.append([method, f"layer {k}", r.name, o["value"], float(point[i, j]),
                             f"[{o['ci_low']:.4f}, {o['ci_high']:.4f}]", f"[{lo:.4f}, {hi:.4f}]", d])
    sec.table(
        f"Agreement: {n_ci} word units, {B} identical resamples given to both (value and 95% percentile CI)",
        ["comparison", "layer", "reference", "ours value", "rsatoolbox value", "ours CI", "rsatoolbox CI",
         "max |Δ CI bound|"],
        rows,
    )
    sec.say(f"Point estimates of all {L} layers × 2 references, Pearson and Spearman, at n = {n_ci}: max |Δ| vs "
            f"rsatoolbox = {point_all:.1e}.")
    sec.ratio("RSA point estimates vs rsatoolbox: largest difference", max(point_all, point_diff), "",
              f"full size (1 layer) and all {L} layers at n = {n_ci}")
    sec.ratio("RSA CI agreement with rsatoolbox, Pearson: largest CI-bound difference", worst["pearson"], "",
              "same resamples; exact up to rounding")
    sec.ratio("RSA CI agreement with rsatoolbox, Spearman: largest CI-bound difference", worst["spearman"], "",
              "same resamples; ours ranks once, rsatoolbox re-ranks each resample")
    sec.say(
        "Resampling scheme — checked in rsatoolbox 0.3.2's source: `RDMs.subsample_pattern` fills each RDM's "
        "diagonal with NaN before indexing rows and columns by the resampled pattern indices, so a pair made of "
        "a pattern and its own duplicate is NaN, and `compare` drops every NaN pair. Every other pair (i, j) "
        "appears w_i·w_j times. That is exactly ours (pairs of a unit with its own duplicate are dropped, the "
        "rest weighted by w_i·w_j), so with the same resamples the Pearson CIs are identical. For Spearman, "
        "ours ranks the full-sample RDMs once and correlates those ranks over the resampled pairs; rsatoolbox "
        "re-ranks each resample's RDMs (duplicated pairs included), so its replicates differ slightly and the "
        "CIs are close but not equal (agreement table below)."
    )
    sec.note(f"rsatoolbox timing for the agreement table: {t_rt_ci:.1f} s for {B} resamples × 2 layers × 2 "
             f"references × 2 comparisons at n = {n_ci} (not used for the ratio).")
    sec.note("rsatoolbox's `eval_bootstrap_pattern` does the same per resample for one model against the mean "
             "over data RDMs (plus a noise ceiling); calling `subsample_pattern` + `compare` directly, as here, "
             "compares every layer in one call per resample, which is the faster way to use rsatoolbox.")
    return sec


def _timed_reps(data, model, weights):
    return timed(_rt_replicates, data, model, weights, ("corr", "spearman"))


def num_s(x: float) -> str:
    from common import num

    return num(x)
