"""Entry: download pretrained models on a machine with internet (avprobe.prefetch).

rule prefetch_model:  snakemake.params.models (one model's entry) → snakemake.output.resolved
rule prefetch_models: snakemake.input.records (every model's record) → one merged record
A download that fails ends the job with one line naming the model and the fix (no traceback).
"""

import sys

from avprobe.prefetch import merge_records, prefetch
from avprobe.runtime import job_log

sm = snakemake  # noqa: F821 - injected by Snakemake

failed = False
with job_log(sm.log[0]) as log:
    if hasattr(sm.input, "records"):
        merge_records(list(sm.input.records), sm.output.resolved)
    else:
        try:
            prefetch(sm.params.models, sm.output.resolved)
        except RuntimeError as err:  # already one line: the model, the endpoint, the fix
            log.error("%s", err)
            failed = True
if failed:  # outside job_log, which would log the exit as a traceback
    sys.exit(1)
