"""Entry: cross-modal retrieval Recall@1/5/10 both ways (+ WER of ASR transcripts) (seed 003).

Reads
  snakemake.input.queries_manifest    manifest of the query (caption) set; ``image_id`` maps a
                                      caption to a gallery stimulus_id
  snakemake.input.queries_embeddings  the queries' embeddings; for mode "fusion" a list of
                                      TWO files whose L2-normalised embeddings are summed
  snakemake.input.gallery_manifest    manifest of the gallery (image) set
  snakemake.input.gallery_embeddings  the gallery's embeddings by the same model
  snakemake.params.name               name of this retrieval entry (config analysis.retrieval)
  snakemake.params.mode               end_to_end | cascade | text | fusion
  snakemake.params.model              model name
  snakemake.params.queries            query set name (or list of two, for fusion)
  snakemake.params.gallery            gallery set name
  snakemake.params.seed               seed (bootstrap CIs over queries)
  snakemake.params.layer              the layer of the shared space (None: an unaligned request,
                                      every layer present in all files with equal widths)
  snakemake.params.space              the shared space's name (avprobe.plan.retrieval_space), or None
  snakemake.output.table              tidy table (Parquet)
  snakemake.log[0], snakemake.threads (numeric libraries are capped to it)
"""

from avprobe.analysis.retrieval import run_retrieval

from avprobe.runtime import job_log

with job_log(snakemake.log[0], snakemake.threads):
    q_emb = snakemake.input.queries_embeddings
    run_retrieval(
        snakemake.input.queries_manifest,
        q_emb if isinstance(q_emb, str) else list(q_emb),
        snakemake.input.gallery_manifest,
        snakemake.input.gallery_embeddings,
        snakemake.output.table,
        name=snakemake.params.name,
        mode=snakemake.params.mode,
        model=snakemake.params.model,
        queries=snakemake.params.queries,
        gallery=snakemake.params.gallery,
        seed=int(snakemake.params.seed),
        layer=snakemake.params.get("layer"),
        space=snakemake.params.get("space"),
    )
