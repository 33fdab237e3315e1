"""Entry: layerwise RSA of one (set, model) embeddings file (seed 001, experiment 1).

Reads
  snakemake.input.manifest            manifest of the set
  snakemake.input.embeddings          the set's embeddings by the model
  snakemake.input.covariate           OPTIONAL: embeddings of the same set by a covariate model
                                      (e.g. the log-mel baseline = spectrogram distance) for
                                      partial RSA; omit the key to skip partial RSA
  snakemake.input.ratings             OPTIONAL: human ratings table (stimulus_id, dimension,
                                      category, proportion) for the human_* references
  snakemake.params.set                set name
  snakemake.params.model              model name
  snakemake.params.cfg                config["analysis"]["rsa"]: distance, comparison and the
                                      optional keys documented in avprobe.analysis.rsa.run_rsa
  snakemake.params.n_bootstrap        bootstrap resamples (config analysis.n_bootstrap)
  snakemake.params.n_permutations     shuffles (config analysis.n_permutations)
  snakemake.params.seed               seed
  snakemake.output.table              tidy table (Parquet)
  snakemake.output.rdms               small .npz of layer RDMs (≤ 200 units) for figures
  snakemake.log[0], snakemake.threads (numeric libraries are capped to it)
"""

from avprobe.analysis.rsa import run_rsa

from avprobe.runtime import job_log

with job_log(snakemake.log[0], snakemake.threads):
    run_rsa(
        snakemake.input.manifest,
        snakemake.input.embeddings,
        snakemake.output.table,
        snakemake.output.rdms,
        set_name=snakemake.params.set,
        model=snakemake.params.model,
        cfg=dict(snakemake.params.cfg or {}),
        n_bootstrap=int(snakemake.params.n_bootstrap),
        n_permutations=int(snakemake.params.n_permutations),
        seed=int(snakemake.params.seed),
        ratings=snakemake.input.get("ratings"),
        covariate=snakemake.input.get("covariate"),
    )
