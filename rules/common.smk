import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from avprobe import plan
from avprobe.sets import SET_MODALITY

plan.check(config)

MODELS = config["models"]
EXTRACTIONS = plan.extractions(config)
LABELLED = plan.labelled_extractions(config)
SYMBOLISM = {plan.symbolism_name(e): e for e in config["analysis"]["symbolism"]}
RETRIEVAL = {e["name"]: e for e in config["analysis"]["retrieval"]}


wildcard_constraints:
    set="|".join(SET_MODALITY),
    model="|".join(map(re.escape, MODELS)),


def manifest(set_name):
    return f"results/stimuli/{set_name}/manifest.parquet"


def embeddings(set_name, model):
    return f"results/embeddings/{set_name}/{model}.parquet"


def local_source(source):
    """Architecture configs live in the repository; resolve them against the workflow."""
    path = Path(source)
    return str(path if path.is_absolute() else Path(workflow.basedir) / path)


def extraction_inputs(wildcards):
    """The set's manifest, plus the built weights when the model is an untrained control."""
    inputs = {"manifest": manifest(wildcards.set)}
    kind = MODELS[wildcards.model].get("kind", "pretrained")
    if kind == "untrained":
        inputs["model_dir_config"] = f"results/models/{wildcards.model}/config.json"
    elif kind == "pretrained":
        inputs["prefetched"] = "results/models/prefetched.json"
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
    entry = RETRIEVAL[wildcards.name]
    return {
        "queries_manifest": manifest(entry["queries"]),
        "queries_embeddings": embeddings(entry["queries"], entry["model"]),
        "gallery_manifest": manifest(entry["gallery"]),
        "gallery_embeddings": embeddings(entry["gallery"], entry["model"]),
    }


def symbolism_tables(wildcards=None):
    return [f"results/tables/symbolism/{name}.parquet" for name in SYMBOLISM]


def symbolism_score_tables(wildcards=None):
    return [f"results/tables/symbolism/{name}.scores.parquet" for name in SYMBOLISM]


def rsa_tables(wildcards=None):
    return [f"results/tables/rsa/{e.set}/{e.model}.parquet" for e in LABELLED]


def rsa_rdms(wildcards=None):
    return [f"results/tables/rsa/{e.set}/{e.model}.rdms.npz" for e in LABELLED]


def probe_tables(wildcards=None):
    return [f"results/tables/probe/{e.set}/{e.model}.parquet" for e in LABELLED]


def retrieval_tables(wildcards=None):
    return [f"results/tables/retrieval/{name}.parquet" for name in RETRIEVAL]


FIGURES = ["stimulus_montage", "rsa_layers", "probe_layers", "rdm_heatmaps"]
if SYMBOLISM:
    FIGURES += ["symbolism_auc", "symbolism_scores"]
if RETRIEVAL:
    FIGURES += ["retrieval_recall"]


def all_targets():
    targets = [e.path for e in EXTRACTIONS]
    targets += symbolism_tables() + rsa_tables() + probe_tables() + retrieval_tables()
    targets += expand("results/figures/{figure}.pdf", figure=FIGURES)
    targets += ["results/tables/summary.md"]
    return targets
