"""Build the pseudoword inventory and write the ``pseudoword_text`` manifest.

snakemake.params.cfg       config["stimuli"]["pseudowords"]
snakemake.params.seed      int; seeds the ``words_per_class`` draw (unused when it is null)
snakemake.output.manifest  results/stimuli/pseudoword_text/manifest.parquet
snakemake.log[0]           the job log (optional)
"""

from avprobe.runtime import job_log
from avprobe.stimuli.pseudowords import make_pseudoword_text

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, sm.threads):
    make_pseudoword_text(sm.params.cfg, sm.params.seed, sm.output.manifest)
