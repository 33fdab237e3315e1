"""Entry: markdown digest of all analysis tables.

Reads snakemake.input.{symbolism,symbolism_forms,rsa,probe,retrieval,dense} (lists of tables),
snakemake.input.rejected (the quarantine tables of the extractions),
snakemake.input.speech_qc (the speech QC voice table, or nothing when the QC is off),
snakemake.params.models (and n_permutations), snakemake.output.markdown, snakemake.log[0].
"""

from avprobe.runtime import job_log
from avprobe.summary import summarize

with job_log(snakemake.log[0]):
    summarize(
        {key: list(getattr(snakemake.input, key, [])) for key in ("symbolism", "symbolism_forms", "rsa", "probe",
                                                                  "retrieval", "dense", "rejected", "speech_qc")},
        snakemake.params.models,
        snakemake.output.markdown,
        n_permutations=snakemake.params.get("n_permutations"),
    )
