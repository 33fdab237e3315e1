"""Entry: zero-shot sound symbolism (kiki–bouba) of one model's shared space (seed 000).

Reads
  snakemake.input.words_manifest      manifest of the words set (pseudowords | pseudoword_text)
  snakemake.input.words_embeddings    that set's embeddings by the model
  snakemake.input.images_manifest     manifest of the image set (shapes)
  snakemake.input.images_embeddings   that set's embeddings by the same model
  snakemake.params.model              model name (config["models"] key)
  snakemake.params.words              words set name
  snakemake.params.images             image set name
  snakemake.params.n_permutations     shuffles per permutation test (config analysis.n_permutations)
  snakemake.params.n_bootstrap        bootstrap resamples (config analysis.n_bootstrap)
  snakemake.params.seed               base seed
  snakemake.params.space              OPTIONAL: name of the shared space scored (the model's
                                      declared space joining the two towers)
  snakemake.params.space_layer        OPTIONAL: the layer holding that space in both files
                                      (default "joint"); None: the model declares none
  snakemake.params.unaligned          OPTIONAL: also score the other layers present in both
                                      files with equal widths, as space "unaligned"
  snakemake.output.table              tidy table (Parquet)
  snakemake.output.scores             OPTIONAL: per-item scores (Parquet) for figures
  snakemake.log[0], snakemake.threads (numeric libraries are capped to it)
"""

from avprobe.analysis.symbolism import run_symbolism

from avprobe.runtime import job_log

# Until every rule passes the model's declared space, absent params mean what the rule did
# before: CLIP's joint layer (its text_image space) plus every unaligned layer.
params = snakemake.params
space_layer = params.get("space_layer", "joint")
space = params.get("space") or ("text_image" if space_layer == "joint" else space_layer)
unaligned = bool(params.get("unaligned", "space_layer" not in params.keys()))

with job_log(snakemake.log[0], snakemake.threads):
    run_symbolism(
        snakemake.input.words_manifest,
        snakemake.input.words_embeddings,
        snakemake.input.images_manifest,
        snakemake.input.images_embeddings,
        snakemake.output.table,
        snakemake.output.get("scores"),
        snakemake.output.get("anchor_boot"),
        model=snakemake.params.model,
        words=snakemake.params.words,
        images=snakemake.params.images,
        n_permutations=int(snakemake.params.n_permutations),
        n_bootstrap=int(snakemake.params.n_bootstrap),
        seed=int(snakemake.params.seed),
        space=space,
        space_layer=space_layer,
        unaligned=unaligned,
    )
