"""Entry: dense similarity maps of one model (seed 002): object localisation and examples.

Reads
  snakemake.input.scenes              scenes manifest (objects, with colours, shapes, places)
  snakemake.input.shapes              shapes manifest (example maps of kiki/bouba)
  snakemake.input.words               words manifest (pseudoword_text | pseudowords)
  snakemake.input.captions            OPTIONAL: spoken captions manifest (speech-prompted maps)
  snakemake.input.model_dir           OPTIONAL: the folder of a built untrained control
  snakemake.params.model / .spec      model name and its config["models"] entry
  snakemake.params.cfg                config["analysis"]["dense"] (object_template, min_coverage, ...)
  snakemake.params.settings           this model's {query, words, space, space_layer} (plan.dense_params)
  snakemake.params.n_bootstrap / .n_permutations / .seed
  snakemake.output.table              tidy table (Parquet): pointing_game, localisation_auc
  snakemake.output.examples           small .npz of example images, maps and masks for figures
  snakemake.log[0], snakemake.threads
"""

from avprobe.analysis.dense import run_dense
from avprobe.extract import model_dir_from_config
from avprobe.runtime import job_log

with job_log(snakemake.log[0], snakemake.threads):
    cfg = dict(snakemake.params.cfg or {})
    settings = dict(snakemake.params.settings)
    run_dense(
        snakemake.input.scenes,
        snakemake.input.shapes,
        snakemake.input.words,
        snakemake.output.table,
        snakemake.output.examples,
        model=snakemake.params.model,
        spec=dict(snakemake.params.spec),
        model_dir=model_dir_from_config(snakemake.input.get("model_dir")),
        cfg=cfg,
        words_set=settings["words"],
        query=settings["query"],
        captions_manifest=snakemake.input.get("captions"),
        n_bootstrap=int(snakemake.params.n_bootstrap),
        n_permutations=int(snakemake.params.n_permutations),
        seed=int(snakemake.params.seed),
    )
