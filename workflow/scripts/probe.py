"""Entry: linear probes per layer of one (set, model) embeddings file (seed 001, experiment 2).

Reads
  snakemake.input.manifest            manifest of the set
  snakemake.input.embeddings          the set's embeddings by the model
  snakemake.params.set                set name
  snakemake.params.model              model name
  snakemake.params.cfg                config["analysis"]["probe"]: folds, C, and the optional
                                      keys inner_folds, targets, splits, groups, n_bootstrap,
                                      n_permutations (see avprobe.analysis.probe.run_probe)
  snakemake.params.seed               seed
  snakemake.params.n_bootstrap        OPTIONAL, overrides cfg (default 1000)
  snakemake.params.n_permutations     OPTIONAL, overrides cfg (default 1000)
  snakemake.output.table              tidy table (Parquet)
  snakemake.log[0], snakemake.threads (numeric libraries are capped to it)
"""

from avprobe.analysis.probe import run_probe

from avprobe.runtime import job_log

with job_log(snakemake.log[0], snakemake.threads):
    run_probe(
        snakemake.input.manifest,
        snakemake.input.embeddings,
        snakemake.output.table,
        set_name=snakemake.params.set,
        model=snakemake.params.model,
        cfg=dict(snakemake.params.cfg or {}),
        seed=int(snakemake.params.seed),
        n_bootstrap=snakemake.params.get("n_bootstrap"),
        n_permutations=snakemake.params.get("n_permutations"),
    )
