"""Retrieval top-k on synthetic embeddings: ours (chunked) vs the full-matrix numpy reference.

Each method runs in its own fresh process (``retrieval_worker.py``) on the same seeded data, so
the peak memory of one does not hide in the other's.
"""

from __future__ import annotations

from pathlib import Path

from common import Context, Section, log, run_script, times

WORKER = Path(__file__).resolve().parent / "retrieval_worker.py"


def run(ctx: Context) -> Section:
    nq, ng, dim = ctx.pick((25_000, 5_000, 512), (2_500, 500, 128))
    sec = Section("retrieval", f"Retrieval top-k: {nq:,} queries × {ng:,} gallery items (dim {dim})")
    sec.say(
        f"Synthetic caption → image retrieval: {ng:,} gallery embeddings, {nq // ng} queries per gallery item "
        f"(its embedding + noise), dim {dim}, float32 inputs, recall@1/5/10. **Ours**: "
        "`avprobe.analysis.retrieval.recall_at_k` (L2-normalise, score a chunk of ≤ 1024 queries at a time, count "
        "the gallery items above/tied with the match; ties get their expected value). **Reference**: what one "
        "writes with numpy — normalise, `sim = Q @ G.T` (the full float64 matrix), `np.argsort(-sim, axis=1)`, "
        "rank of the match. Both compute in float64. Each runs once in its own process; peak memory is the "
        "increase of the process's peak RSS over its RSS just before the call (inputs excluded), "
        f"{ctx.threads} BLAS threads."
    )
    res = {}
    for method in ("ours", "reference"):
        log(f"retrieval {method}: {nq} × {ng} × {dim}")
        res[method] = run_script(WORKER, [method, nq, ng, dim])
    o, r = res["ours"], res["reference"]
    same = o["recall"] == r["recall"]
    max_diff = max(abs(o["recall"][k] - r["recall"][k]) for k in o["recall"])
    mib = 2**20
    rows = []
    for name, v in (("ours (chunked)", o), ("numpy reference (full matrix + argsort)", r)):
        rows.append([name, v["seconds"], v["peak_bytes"] / mib, *[v["recall"][k] for k in ("1", "5", "10")]])
    rows.append(["ratio reference / ours", times(r["seconds"] / o["seconds"]), times(r["peak_bytes"] / max(o["peak_bytes"], 1)),
                 "", "", ""])
    sec.table("time, peak memory and recall", ["method", "seconds", "peak memory (MiB)", "R@1", "R@5", "R@10"], rows)
    sec.say(f"Recall values identical: **{same}** (max |Δ| = {max_diff:.1e}). Inputs: {o['input_bytes'] / mib:.0f} MiB "
            f"(float32); the full float64 score matrix alone is {nq * ng * 8 / mib:,.0f} MiB.")
    sec.ratio(f"retrieval {nq / 1000:g}k × {ng / 1000:g}k: reference / ours (time)",
              r["seconds"] / o["seconds"], "> 1", f"ours {o['seconds']:.1f} s, reference {r['seconds']:.1f} s; "
              f"same recall: {same}")
    sec.ratio(f"retrieval {nq / 1000:g}k × {ng / 1000:g}k: reference / ours (peak memory)",
              r["peak_bytes"] / max(o["peak_bytes"], 1), "> 1",
              f"ours {o['peak_bytes'] / mib:,.0f} MiB, reference {r['peak_bytes'] / mib:,.0f} MiB")
    return sec
