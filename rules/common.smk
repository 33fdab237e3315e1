import os
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from avprobe import plan
from avprobe.prefetch import pretrained_sources
from avprobe.cluster import check_default_resources
from avprobe.models.folder import rebuild_state
from avprobe.report_check import check_final_outputs
from avprobe.report_check import requested as final_output_commands
from avprobe.sets import ASR_SETS, CORPUS_SET_MODALITY, SET_MODALITY
from avprobe.stimuli.corpora import check_corpus_config

if any("conda" in str(m).lower() for m in workflow.deployment_settings.deployment_method) and not any(
    shutil.which(tool) for tool in ("conda", "mamba", "micromamba")
):
    raise WorkflowError(
        "--use-conda was given but no conda, mamba or micromamba is on PATH. Install one (the envs are "
        "envs/*.yaml), or use the pip route without --use-conda: python3 -m venv .venv && "
        ".venv/bin/pip install -r requirements.txt && .venv/bin/snakemake --cores 2 (README, Quick start)"
    )

plan.validate_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
plan.check(config)
plan.check_sources(config, workflow.basedir)
check_corpus_config(config)
if not workflow.remote_exec:
    # a SLURM run must keep every resource of profiles/slurm (avprobe.cluster)
    check_default_resources(workflow.resource_settings.default_resources)

MODELS = config["models"]
# Models whose weights come from a hub (avprobe.prefetch.pretrained_sources): each has its own
# prefetch job, and prefetch_models fetches them all.
HUB_MODELS = list(pretrained_sources(MODELS))
EXTRACTIONS = plan.extractions(config)
LABELLED = plan.labelled_extractions(config)
SYMBOLISM = {plan.symbolism_name(e): e for e in config["analysis"]["symbolism"]}
RETRIEVAL = {e["name"]: plan.retrieval_entry(e) for e in config["analysis"]["retrieval"]}
# The shared space each comparison of two towers runs in (avprobe.models.registry declares the
# spaces): {space, space_layer}, both None for an explicitly unaligned request.
SYMBOLISM_SPACE = {n: plan.space_params(plan.symbolism_space(config, e)) for n, e in SYMBOLISM.items()}
# Symbolism entries of one model scored in several forms of the words (speech, text, cascade).
SYMBOLISM_FORMS = plan.symbolism_forms_entries(config)
RETRIEVAL_SPACE = {n: plan.space_params(plan.retrieval_space(config, e)) for n, e in RETRIEVAL.items()}
# Models whose patch features make dense similarity maps (analysis.dense.models).
DENSE = plan.dense_models(config)
# Per dense model: {query: text | speech, words, space, space_layer} (plan.dense_params).
DENSE_PARAMS = {m: plan.dense_params(config, m) for m in DENSE}
# The speech recogniser of the cascade (asr.model), or None: then no transcript set is built.
ASR_MODEL = plan.asr_model(config)
# How the recogniser decodes: transformers' generate, or the checkpoint converted to CTranslate2.
ASR_BACKEND = (config.get("asr") or {}).get("backend", "transformers")
# Models whose extractions run as N resumable shard jobs, merged at the end (shards: N > 1).
SHARDS = {m: plan.shards_for(spec) for m, spec in MODELS.items() if plan.shards_for(spec) > 1}


# Speech QC settings, the recogniser folder and the QC tables. The folder is the packaged
# Whisper base (joined by assemble_qc_recogniser) unless stimuli.tts.qc.model names another
# CTranslate2 Whisper folder.
QC_CFG = config["stimuli"]["tts"].get("qc") or {}
PACKAGED_QC_MODEL = "results/models/whisper-base-ct2"
QC_MODEL_DIR = str(QC_CFG.get("model") or PACKAGED_QC_MODEL).rstrip("/")
SPEECH_QC = {
    "clips": "results/tables/speech_qc/clips.parquet",
    "voices": "results/tables/speech_qc/voices.parquet",
    "markdown": "results/tables/speech_qc/voices.md",
    "html": "results/tables/speech_qc/voices.html",
}
# Sets whose rows carry a voice: their embedding jobs quarantine the clips of excluded voices.
VOICE_SETS = ("pseudowords", "captions", *ASR_SETS)


def voice_qc_input(set_name):
    """The voice table, as an input of a spoken set's embedding job when a bar is set."""
    if QC_CFG.get("enabled", True) and QC_CFG.get("max_wer") is not None and set_name in VOICE_SETS:
        return {"voice_qc": SPEECH_QC["voices"]}
    return {}


def alternatives(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"


wildcard_constraints:
    set="|".join(list(SET_MODALITY) + list(CORPUS_SET_MODALITY)),
    model="|".join(map(re.escape, MODELS)),


def manifest(set_name):
    return f"results/stimuli/{set_name}/manifest.parquet"


def embeddings(set_name, model):
    return f"results/embeddings/{set_name}/{model}.parquet"


def local_source(source):
    """Architecture configs live in the repository; resolve them against the workflow, and
    name them relative to the working directory when they lie under it, so that a moved or
    freshly cloned checkout does not see changed params (and rebuild every control)."""
    path = Path(source)
    path = path if path.is_absolute() else Path(workflow.basedir) / path
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def built_model_dir(model):
    return f"results/models/{model}"


def model_rebuild_flag(wildcards):
    """A built folder with a missing or changed file (avprobe.models.folder compares it with the
    record the build wrote) takes results/models/<model>.rebuild as input; that file's producer
    reruns whenever the folder breaks anew, so the folder is rebuilt (and only then)."""
    flag = f"results/models/{wildcards.model}.rebuild"
    if rebuild_state(built_model_dir(wildcards.model), flag):
        return {"rebuild": flag}
    return {}


def model_weights(model):
    """The built weights of an untrained control, or the prefetch record of a hub model (its
    own, so asking for one model's embeddings fetches, or fails on, that model alone)."""
    kind = MODELS[model].get("kind", "pretrained")
    if kind == "untrained":
        return {"model_dir": built_model_dir(model)}
    if model in HUB_MODELS:
        return {"prefetched": prefetch_record(model)}
    return {}  # a local folder or file: nothing to fetch


def prefetch_record(model):
    return f"results/models/prefetched/{model}.json"


def extraction_inputs(wildcards):
    """The set's manifest, plus the built weights when the model is an untrained control."""
    return {"manifest": manifest(wildcards.set), **model_weights(wildcards.model), **voice_qc_input(wildcards.set)}


def transcribe_inputs(wildcards):
    """The spoken set a transcript set transcribes, and the recogniser's weights."""
    if ASR_MODEL is None:
        raise ValueError(f"{wildcards.asr_set} needs a speech recogniser: set asr.model in the config")
    inputs = {"manifest": manifest(ASR_SETS[wildcards.asr_set]), **model_weights(ASR_MODEL)}
    if ASR_BACKEND == "ctranslate2":
        inputs["ct2_model"] = f"results/models/{ASR_MODEL}-ct2/model.bin"
    return inputs


def shard_files(wildcards):
    """The shard files of one sharded extraction, in shard order."""
    return plan.shard_paths(wildcards.set, wildcards.model, SHARDS[wildcards.model])


def shard_rejected_files(wildcards):
    """The rejected tables of those shards, in the same order."""
    n = SHARDS[wildcards.model]
    return [
        f"results/embeddings/{wildcards.set}/rejected/{wildcards.model}.shards/{k}-of-{n}.parquet"
        for k in range(1, n + 1)
    ]


def rsa_inputs(wildcards):
    """Manifest and embeddings; for partial RSA, the covariate model's embeddings of the set
    (config.yaml: the log-mel spectrogram, as in seed 001's appendix)."""
    inputs = {"manifest": manifest(wildcards.set), "embeddings": embeddings(wildcards.set, wildcards.model)}
    covariate = plan.rsa_covariate(config, wildcards.set, wildcards.model)
    if covariate:
        inputs["covariate"] = embeddings(wildcards.set, covariate)
    ratings = config["analysis"]["rsa"].get("ratings")
    if ratings and wildcards.set == "impacts":
        inputs["ratings"] = ratings
    return inputs


def dense_inputs(wildcards):
    """Scenes (localisation), shapes and the reference words (examples), the spoken captions
    when speech prompts the maps, and the weights."""
    settings = DENSE_PARAMS[wildcards.model]
    inputs = {
        "scenes": manifest("scenes"),
        "shapes": manifest("shapes"),
        "words": manifest(settings["words"]),
        **model_weights(wildcards.model),
    }
    if settings["query"] == "speech":
        inputs["captions"] = manifest("captions")
    return inputs


def symbolism_inputs(wildcards):
    entry = SYMBOLISM[wildcards.name]
    return {
        "words_manifest": manifest(entry["words"]),
        "words_embeddings": embeddings(entry["words"], entry["model"]),
        "images_manifest": manifest(entry["images"]),
        "images_embeddings": embeddings(entry["images"], entry["model"]),
    }


def retrieval_inputs(wildcards):
    """One query set, or two for fusion (their normalised embeddings are summed); the manifest
    of a transcript set comes first, as it also holds the reference text for the WER row."""
    entry = RETRIEVAL[wildcards.name]
    queries = plan.retrieval_queries(entry)
    query_files = [embeddings(q, entry["model"]) for q in queries]
    return {
        "queries_manifest": manifest(plan.retrieval_manifest_set(queries)),
        "queries_embeddings": query_files[0] if len(query_files) == 1 else query_files,
        "gallery_manifest": manifest(entry["gallery"]),
        "gallery_embeddings": embeddings(entry["gallery"], entry["model"]),
    }


def symbolism_tables(wildcards=None):
    return [f"results/tables/symbolism/{name}.parquet" for name in SYMBOLISM]


def symbolism_score_tables(wildcards=None):
    return [f"results/tables/symbolism/{name}.scores.parquet" for name in SYMBOLISM]


def symbolism_forms_tables(wildcards=None):
    return [plan.SYMBOLISM_FORMS_TABLE] if SYMBOLISM_FORMS else []


def rsa_tables(wildcards=None):
    return [f"results/tables/rsa/{e.set}/{e.model}.parquet" for e in LABELLED]


def rsa_rdms(wildcards=None):
    return [f"results/tables/rsa/{e.set}/{e.model}.rdms.npz" for e in LABELLED]


def probe_tables(wildcards=None):
    return [f"results/tables/probe/{e.set}/{e.model}.parquet" for e in LABELLED]


def retrieval_tables(wildcards=None):
    return [f"results/tables/retrieval/{name}.parquet" for name in RETRIEVAL]


def rejected_tables(wildcards=None):
    """The quarantine table of every extraction (sharded ones are merged into the same path)."""
    return [f"results/embeddings/{e.set}/rejected/{e.model}.parquet" for e in EXTRACTIONS]


def dense_tables(wildcards=None):
    return [f"results/tables/dense/{model}.parquet" for model in DENSE]


def dense_examples(wildcards=None):
    return [f"results/tables/dense/{model}.examples.npz" for model in DENSE]


FIGURES = ["stimulus_montage", "rsa_layers", "probe_layers", "rdm_heatmaps"]
if any(plan.rsa_covariate(config, e.set, e.model) for e in LABELLED):
    FIGURES += ["rsa_partial"]
if SYMBOLISM:
    FIGURES += ["symbolism_auc", "symbolism_scores"]
if SYMBOLISM_FORMS:
    FIGURES += ["symbolism_forms"]
if RETRIEVAL:
    FIGURES += ["retrieval_recall"]
if DENSE:
    FIGURES += ["dense_heatmaps"]


def all_targets():
    targets = [e.path for e in EXTRACTIONS]
    targets += symbolism_tables() + symbolism_forms_tables() + rsa_tables() + probe_tables() + retrieval_tables() + dense_tables()
    targets += expand("results/figures/{figure}.pdf", figure=FIGURES)
    targets += ["results/tables/summary.md"]
    if QC_CFG.get("enabled", True):
        targets += list(SPEECH_QC.values())
    targets += [plan.PROVENANCE]
    return targets


# `snakemake --report` and `--touch` refuse while final outputs of this config are missing
# (avprobe.report_check).
for _flag in final_output_commands(sys.argv):
    check_final_outputs(_flag, all_targets(), workflow.config_settings.configfiles)
