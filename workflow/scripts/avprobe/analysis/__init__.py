"""analysis stage of avprobe.

* :mod:`.stats` — permutation p-values, bootstrap resampling / CIs, Benjamini–Hochberg FDR.
* :mod:`.symbolism` — zero-shot kiki–bouba scores in a shared space (seed 000).
* :mod:`.rsa` — layerwise RSA against label / attribute / human reference RDMs (seed 001).
* :mod:`.probe` — L2 logistic probes with nested C selection and transfer splits (seed 001).
* :mod:`.retrieval` — chunked Recall@k both ways and word error rate (seed 003).

Each ``run_*`` function reads manifests and embeddings and writes one tidy table
(:func:`avprobe.io.tidy_table`); the entry scripts in ``workflow/scripts`` call them.
"""
