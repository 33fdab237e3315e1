"""Parquet: bytes per embedding, and reading one layer vs the whole file."""

from __future__ import annotations

import numpy as np

from common import Context, Section, best_of, log, timed, times


def run(ctx: Context) -> Section:
    import pandas as pd

    from avprobe import io

    n, n_layers, dim = ctx.pick((3888, 13, 768), (500, 4, 128))
    reps = ctx.pick(3, 2)
    sec = Section("parquet", f"Parquet: {n:,} stimuli × {n_layers} layers × {dim} dims")
    rng = np.random.default_rng(0)
    ids = [f"word{i // 6:04d}-voice{i % 6}" for i in range(n)]
    layers = [(str(k), k, (ids, rng.standard_normal((n, dim), dtype=np.float32))) for k in range(n_layers)]
    path = ctx.workdir / "emb.parquet"
    log(f"parquet: writing {n} × {n_layers} × {dim}")
    t_write, rows = timed(io.write_embeddings, layers, path, {"model": "synthetic", "kind": "benchmark"})
    size = path.stat().st_size
    per_row = size / rows
    # what the same table takes without a dictionary page for the float values (informational)
    import pyarrow.parquet as pq

    plain = ctx.workdir / "plain.parquet"
    pf = pq.ParquetFile(path)
    with pq.ParquetWriter(plain, pf.schema_arrow, use_dictionary=["stimulus_id", "layer", "layer_index"]) as w:
        for i in range(pf.num_row_groups):
            w.write_table(pf.read_row_group(i), row_group_size=n)
    plain_per_row = plain.stat().st_size / rows
    sec.say(
        f"A synthetic embeddings file written by `avprobe.io.write_embeddings` (one row group per layer, fixed-size "
        f"float32 lists, the library's default Parquet settings): {n:,} stimuli × {n_layers} layers × {dim} "
        "standard-normal float32 values (real embeddings compress about as little). Read times are the best of "
        f"{reps} runs (the file is in the page cache, as it is when an analysis job reads what the extraction "
        "job just wrote)."
    )
    sec.table(
        "size",
        ["", "value"],
        [
            ["rows (stimulus × layer)", rows],
            ["file size (MiB)", size / 2**20],
            ["bytes per embedding (file size / rows)", per_row],
            [f"raw float32 bytes per embedding ({dim} × 4)", dim * 4],
            ["overhead vs raw float32", f"{100 * (per_row / (dim * 4) - 1):+.1f}%"],
            ["bytes per embedding if the float values had no dictionary page (not what the pipeline writes)",
             f"{plain_per_row:,.0f} ({100 * (plain_per_row / (dim * 4) - 1):+.1f}%)"],
            ["write time (s)", t_write],
        ],
    )
    last = str(n_layers - 1)
    log("parquet: reading")
    t_one, (r_ids, mat) = best_of(reps, io.read_layer, path, last)
    assert mat.shape == (n, dim) and np.array_equal(mat, layers[-1][2][1])
    t_filter, _ = best_of(reps, lambda: np.stack(pd.read_parquet(path, filters=[("layer", "==", last)])["embedding"].to_numpy()))
    t_all_lib, _ = best_of(reps, lambda: [m for *_, m in io.read_all_layers(path)])
    t_pd, df = best_of(reps, pd.read_parquet, path)
    t_pd_stack, _ = best_of(1, lambda: {k: np.stack(g["embedding"].to_numpy()) for k, g in df.groupby("layer")})
    sec.table(
        "read time (seconds; lower is better)",
        ["read", "seconds", "vs one layer"],
        [
            ["one layer: `avprobe.io.read_layer` → (ids, matrix)", t_one, "1×"],
            ["one layer: `pd.read_parquet(filters=[layer == …])` + `np.stack` (README snippet)", t_filter, times(t_filter / t_one)],
            [f"all {n_layers} layers: `avprobe.io.read_all_layers` → matrices", t_all_lib, times(t_all_lib / t_one)],
            ["whole file: `pd.read_parquet(path)` → DataFrame of arrays", t_pd, times(t_pd / t_one)],
            [f"  + `np.stack` per layer → {n_layers} matrices", t_pd + t_pd_stack, times((t_pd + t_pd_stack) / t_one)],
        ],
    )
    sec.ratio("parquet: bytes per embedding / raw float32 bytes", per_row / (dim * 4), "",
              f"{per_row:,.0f} B vs {dim * 4:,} B per {dim}-d embedding")
    sec.ratio(f"parquet: whole file (pd.read_parquet) / one layer (read_layer), read time", t_pd / t_one, "> 1",
              f"one layer {t_one * 1000:.0f} ms, whole file {t_pd:.2f} s")
    return sec
