"""One retrieval method in a fresh process (so its memory peak is its own).

    python benchmarks/retrieval_worker.py {ours|reference} N_QUERIES N_GALLERY DIM

Prints ``RESULT:{json}`` with seconds, peak RSS increase and recall@k.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import current_rss_bytes, max_rss_bytes  # noqa: E402

KS = (1, 5, 10)
NOISE = 7.0  # query = its image's embedding + NOISE × N(0, 1) per dimension: R@1 well inside (0, 1)


def data(nq: int, ng: int, dim: int, seed: int = 0):
    """Gallery (ng, dim) float32; nq = captions_per_image × ng queries, each its image plus noise."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((ng, dim), dtype=np.float32)
    img = np.repeat(np.arange(ng), -(-nq // ng))[:nq]
    q = rng.standard_normal((nq, dim), dtype=np.float32)
    q *= NOISE
    q += g[img]
    return q, g, img


def reference(q, g, img, ks=KS):
    """What one writes with numpy: the full score matrix, a full argsort, the rank of the match."""
    qn = q.astype(np.float64)
    qn /= np.linalg.norm(qn, axis=1, keepdims=True)
    gn = g.astype(np.float64)
    gn /= np.linalg.norm(gn, axis=1, keepdims=True)
    sim = qn @ gn.T
    order = np.argsort(-sim, axis=1)
    rank = np.argmax(order == img[:, None], axis=1)
    return {k: float(np.mean(rank < k)) for k in ks}


def ours(q, g, img, ks=KS):
    from avprobe.analysis.retrieval import recall_at_k

    return recall_at_k(q, g, img, ks)


def main(method: str, nq: int, ng: int, dim: int) -> None:
    q, g, img = data(nq, ng, dim)
    fn = {"ours": ours, "reference": reference}[method]
    if method == "ours":
        import avprobe.analysis.retrieval  # noqa: F401 - import cost outside the timing
    before = current_rss_bytes()
    t = time.perf_counter()
    recall = fn(q, g, img)
    seconds = time.perf_counter() - t
    peak = max(0, max_rss_bytes() - before)
    print("RESULT:" + json.dumps({"seconds": seconds, "peak_bytes": peak, "recall": {str(k): v for k, v in recall.items()},
                                  "input_bytes": int(q.nbytes + g.nbytes)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
