"""Scaling: extraction and RSA time vs the number of stimuli."""

from __future__ import annotations

from common import Context, Section, log, synthetic_waves, timed, write_audio_set


def run(ctx: Context) -> Section:
    import pandas as pd

    from avprobe.analysis import rsa
    from avprobe.extract import extract_embeddings

    from bench_extraction import EXTRACT_THREADS, _build
    from bench_rsa import _refs, synthetic_study

    sizes = ctx.pick((500, 1000, 2000, 4000), (24, 48, 96))
    B = ctx.pick(1000, 200)
    dim = ctx.pick(768, 64)
    sec = Section("scaling", "Scaling with the number of stimuli")
    sec.say(
        f"Extraction: HuBERT-tiny (untrained), every layer, batch 16, {EXTRACT_THREADS} torch thread, synthetic clips of "
        "0.3–1.5 s through `avprobe.extract.extract_embeddings` (the first n clips of one set); seconds = the "
        f"extraction loop (reading WAVs + model). RSA: `rsa_inference`, one layer ({dim} dims, cosine RDM) × 2 "
        f"references (label, sharpness), Spearman, {B} bootstraps, {ctx.threads} BLAS threads; seconds = RDM + "
        "inference. RSA work grows with the number of pairs, n(n−1)/2, so its time per stimulus grows with n; "
        "extraction is linear."
    )
    biggest = max(sizes)
    manifest = write_audio_set(ctx.workdir / "audio", synthetic_waves(biggest, seed=5))
    full = pd.read_parquet(manifest)
    spec, model_dir = _build("hubert-untrained", ctx)
    spec = dict(spec, towers=["audio"], batch_size=16)
    # warm-up
    warm_manifest = ctx.workdir / "audio" / "warm.parquet"
    full.head(16).to_parquet(warm_manifest, index=False)
    extract_embeddings(warm_manifest, "pseudowords", "hubert-untrained", spec, ctx.workdir / "warm.parquet",
                       model_dir=model_dir, device="cpu", threads=EXTRACT_THREADS)
    layers, labels, sharp, _ = synthetic_study(biggest // 2, 2, 1, dim, seed=3)
    rows = []
    for n in sizes:
        sub = ctx.workdir / "audio" / f"m{n}.parquet"
        full.head(n).to_parquet(sub, index=False)
        log(f"scaling: extraction of {n} clips")
        summary = extract_embeddings(sub, "pseudowords", "hubert-untrained", spec, ctx.workdir / f"e{n}.parquet",
                                     model_dir=model_dir, device="cpu", threads=EXTRACT_THREADS)
        t_ext = summary["seconds"]
        log(f"scaling: RSA of {n} stimuli")
        x = layers[0][:n]
        refs = _refs(labels[:n], sharp[:n])
        t_rsa, _ = timed(lambda: rsa.rsa_inference({"0": rsa.rdm_vector(x)}, refs, comparison="spearman",
                                                   n_bootstrap=B, n_permutations=0, seed=0))
        pairs = n * (n - 1) // 2
        rows.append([n, t_ext, 1000 * t_ext / n, t_rsa, 1000 * t_rsa / n, 1e6 * t_rsa / pairs])
    sec.table(
        "time vs number of stimuli",
        ["stimuli", "extraction (s)", "extraction ms / stimulus", "RSA, 1 layer (s)", "RSA ms / stimulus",
         "RSA µs / pair"],
        rows,
    )
    first, last = rows[0], rows[-1]
    grow = last[0] / first[0]
    sec.say(
        f"From {first[0]:,} to {last[0]:,} stimuli ({grow:g}× more): extraction took {last[1] / first[1]:.1f}× longer, "
        f"RSA {last[3] / first[3]:.1f}× longer (pairs: {(last[0] * (last[0] - 1)) / (first[0] * (first[0] - 1)):.0f}× more)."
    )
    sec.ratio(f"scaling: extraction time ×{grow:g} stimuli", last[1] / first[1], "",
              f"linear would be {grow:g}")
    sec.ratio(f"scaling: RSA time ×{grow:g} stimuli", last[3] / first[3], "",
              f"pairs grow {(last[0] * (last[0] - 1)) / (first[0] * (first[0] - 1)):.0f}×")
    return sec
