"""Merge the shards of one sharded extraction into results/embeddings/<set>/<model>.parquet.

snakemake.input.manifest:   the set's manifest (the merged rows must follow its order)
snakemake.input.shards:     <model>.shards/<k>-of-<N>.parquet, k = 1..N, in order
snakemake.input.rejected:   the shards' rejected tables, in the same order
snakemake.output.embeddings / .rejected: the merged file and rejected table
snakemake.log[0], snakemake.threads
"""

from avprobe.extract import merge_shards
from avprobe.runtime import job_log

with job_log(snakemake.log[0] if snakemake.log else None, snakemake.threads):  # noqa: F821
    merge_shards(
        list(snakemake.input.shards),  # noqa: F821
        snakemake.output.embeddings,  # noqa: F821
        manifest_path=snakemake.input.manifest,  # noqa: F821
        rejected_paths=list(snakemake.input.get("rejected", [])),  # noqa: F821
        rejected_out=snakemake.output.get("rejected"),  # noqa: F821
    )
