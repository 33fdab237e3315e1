"""Entry: speech vs text vs cascade sound symbolism of each model (avprobe.analysis.symbolism_forms).

snakemake.input.scores     the symbolism scores tables, in the order of params.entries
snakemake.input.anchor_boot  the entries' scores under resampled anchors (.anchor_boot.npz)
snakemake.params.entries   avprobe.plan.symbolism_forms_entries(config)
snakemake.params.n_bootstrap, snakemake.params.seed
snakemake.output.table     results/tables/symbolism/forms.parquet
snakemake.log[0], snakemake.threads
"""

from avprobe.analysis.symbolism_forms import run_symbolism_forms
from avprobe.runtime import job_log

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0], sm.threads):
    run_symbolism_forms(list(sm.params.entries), list(sm.input.scores), sm.output.table,
                        n_bootstrap=int(sm.params.n_bootstrap), seed=int(sm.params.seed),
                        anchor_boot_paths=list(sm.input.anchor_boot))
