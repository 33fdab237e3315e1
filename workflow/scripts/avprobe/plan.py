"""What the workflow will compute, derived from the validated config.

The rule files ask this module which (set, model) pairs to extract and which analyses to
run, so the DAG and the tests agree on one answer.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from .sets import ASR_SETS, LABELLED_SETS, SET_MODALITY, corpus_sets, modality

#: The sets the default study synthesises; each is embedded by every model with its tower
#: (the transcript sets of ASR_SETS only when ``asr.model`` is set).
STUDY_SETS = tuple(SET_MODALITY)

#: Families that only transcribe speech (the recogniser of the cascade); they embed no set.
ASR_FAMILIES = ("whisper_asr",)
#: Families whose checkpoint can serve as ``asr.model`` (a whisper_encoder entry's source is a
#: whole Whisper checkpoint, so the same entry can transcribe).
ASR_CAPABLE_FAMILIES = ("whisper_asr", "whisper_encoder")
#: The query set(s) of each retrieval mode when an entry gives no ``queries``.
DEFAULT_QUERIES = {
    "end_to_end": "captions",  # speech → the model's audio tower
    "cascade": "caption_asr",  # ASR transcripts → the text tower
    "text": "caption_text",  # ground-truth captions → the text tower (the cascade's upper bound)
    "fusion": ["captions", "caption_asr"],  # sum of the two normalised query embeddings
}


class ConfigError(ValueError):
    """A config that passed the schema but does not make sense as a study."""


@dataclass(frozen=True)
class Extraction:
    set: str
    model: str

    @property
    def path(self) -> str:
        return f"results/embeddings/{self.set}/{self.model}.parquet"


def check(config: dict) -> None:
    """Cross-field checks the JSON schema cannot express; raise one clear error."""
    models = config["models"]
    covariate = (config["analysis"].get("rsa") or {}).get("covariate_model")
    if covariate and covariate not in models:
        raise ConfigError(
            f"analysis.rsa.covariate_model: unknown model {covariate!r}; models are {sorted(models)}"
            " (or null for no partial RSA)"
        )
    for entry in config["analysis"].get("symbolism", []):
        name = entry["model"]
        if name not in models:
            raise ConfigError(
                f"analysis.symbolism: unknown model {name!r}; models are {sorted(models)}"
            )
        need = {modality(entry["words"]), modality(entry["images"])}
        missing = need - set(models[name]["towers"])
        if missing:
            raise ConfigError(
                f"analysis.symbolism: model {name!r} has towers {models[name]['towers']} but "
                f"scoring {entry['words']} against {entry['images']} needs {sorted(need)}"
            )
    check_dense(config)
    check_asr(config)
    for entry in config["analysis"].get("retrieval", []):
        check_retrieval_entry(entry, models, asr_model(config))
    for name, spec in models.items():
        if spec.get("kind") == "untrained" and not spec.get("source"):
            raise ConfigError(
                f"models.{name}: an untrained control needs `source`, the folder of its "
                "architecture config"
            )
        if spec.get("kind") == "pretrained" and not spec.get("source"):
            raise ConfigError(f"models.{name}: a pretrained model needs `source` (a hub id or folder)")
        check_local_weights(name, spec)
    names = [e["name"] for e in config["analysis"].get("retrieval", [])]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"analysis.retrieval: names must be unique, repeated: {sorted(dup)}")
    allowed = _model_keys()
    for name, spec in models.items():
        check_model_keys(name, spec, allowed)
        check_layer_selectors(name, spec)


# ------------------------------------------------------------------------------ model entries
#: Layers of each built-in family that are selected by name; every other layer of the
#: transformer families is a hidden state "0".."N" (selected by index or by that string).
NAMED_LAYERS = {
    "logmel": ("mean", "meanstd"),
    "pixels": ("grey", "rgb"),
    "clip": ("joint",),
    "siglip": ("joint",),
    "clap": ("joint",),
    "hf_audio": (),
    "whisper_encoder": (),
    "whisper_asr": (),  # speech recognition only (asr.model); no layers are embedded
    "ast": (),
    "hf_image": (),
    "hf_text": (),
}
#: Families whose layers are all named (integers index those names, in order).
ALL_NAMED = ("logmel", "pixels")
#: Spec keys a built-in family reads that the schema leaves to the family.
FAMILY_KEYS = {
    "logmel": ("n_fft", "hop_length", "fmin", "fmax"),
    "whisper_encoder": ("max_new_tokens", "num_beams"),
}
_SCHEMA = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"


def _model_keys() -> tuple[str, ...] | None:
    """The keys a model entry may have, from the schema (None when it cannot be read)."""
    try:
        import yaml

        schema = yaml.safe_load(_SCHEMA.read_text())
        return tuple(schema["properties"]["models"]["additionalProperties"]["properties"])
    except Exception:  # a packaged copy without the schema: skip the check
        return None


#: Weight files transformers loads from a local folder, in its order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def missing_weights(folder: str | Path) -> list[str]:
    """The weight files a local model folder lacks: ``[]`` when it has one of
    :data:`WEIGHT_FILES` (and, for a sharded checkpoint, every shard its index lists), else the
    names that were looked for or the missing shards."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return []
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError):
            return [f"{name} (unreadable index)"]
        return [s for s in shards if not (folder / s).is_file()]
    return list(WEIGHT_FILES)


def check_local_weights(name: str, spec: dict) -> None:
    """A pretrained model whose ``source`` is a local folder must hold its weights; said when
    the DAG is built, not when the extraction job fails (``untrained`` controls are built)."""
    source = spec.get("source")
    family = str(spec.get("family", ""))
    if (spec.get("kind", "pretrained") != "pretrained" or not source or not Path(source).is_dir()
            or family in ALL_NAMED or family not in NAMED_LAYERS):
        return
    missing = missing_weights(source)
    if missing:
        raise ConfigError(f"models.{name}: the local folder {str(source)!r} has no weights: missing "
                          f"{' or '.join(missing) if missing == list(WEIGHT_FILES) else ', '.join(missing)}. "
                          "Copy the checkpoint's weight files into it (or point `source` at a hub id)")


def check_model_keys(name: str, spec: dict, allowed) -> None:
    """A built-in family's entry may only have known keys (catches typos such as ``layer:``)."""
    family = str(spec.get("family", ""))
    if allowed is None or family not in NAMED_LAYERS:  # plugins take their own keys
        return
    known = set(allowed) | set(FAMILY_KEYS.get(family, ()))
    for key in spec:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"models.{name}: unknown key {key!r}{hint}; allowed keys for family "
                              f"{family!r} are {sorted(known)}")


def check_layer_selectors(name: str, spec: dict) -> None:
    """Validate ``models.<name>.layers`` as far as the config allows.

    Integers (and strings such as ``"-1"``) index hidden states, whose number is known only when
    the model is loaded (extraction then names the model's layer count); a name must be one of
    the family's named layers. Plugins are not checked here.
    """
    family = str(spec.get("family", ""))
    selectors = spec.get("layers", "all")
    if selectors in (None, "all") or family not in NAMED_LAYERS:
        return
    named = NAMED_LAYERS[family]
    for sel in selectors:
        if isinstance(sel, bool):
            raise ConfigError(f"models.{name}.layers: {sel!r} is not a layer; use indices or names")
        if isinstance(sel, int) or re.fullmatch(r"-?\d+", str(sel)):
            index = int(sel)
            if family in ALL_NAMED and not -len(named) <= index < len(named):
                raise ConfigError(f"models.{name}.layers: index {index} is out of range; family {family!r} "
                                  f"has {len(named)} layers {list(named)} (indices 0..{len(named) - 1})")
            continue
        if sel not in named:
            what = (f"its layers are {list(named)}" if family in ALL_NAMED else
                    "its layers are hidden states selected by index (0 = embedding output, -1 = last "
                    "block; or the strings '0', '1', …)" + (f" and the named layers {list(named)}" if named else ""))
            raise ConfigError(f"models.{name}.layers: unknown layer {sel!r} for family {family!r}; {what}")


# ------------------------------------------------------------------------------ provenance
#: The provenance table (:mod:`avprobe.provenance`), the last target of a run.
PROVENANCE = "results/provenance.parquet"


def config_hash(config: dict) -> str:
    """The hash of the whole validated config (as :func:`avprobe.io.hash_config`)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def workflow_versions() -> dict:
    """Versions of the process that runs the workflow (Snakemake itself)."""
    try:
        import snakemake

        version = snakemake.__version__
    except Exception:  # pragma: no cover - plan used outside snakemake
        version = None
    return {"snakemake": version, "python": platform.python_version()}


def provenance_inputs(targets, *more) -> list[str]:
    """Every output the provenance table hashes, once: the run's targets, the PNG beside each
    figure PDF, the rejected table beside each embeddings file, and the files in ``more``."""
    out = []
    for t in map(str, targets):
        out.append(t)
        if t.startswith("results/figures/") and t.endswith(".pdf"):
            out.append(t[: -len(".pdf")] + ".png")
        if t.startswith("results/embeddings/") and t.endswith(".parquet") and "/rejected/" not in t:
            head, _, name = t.rpartition("/")
            out.append(f"{head}/rejected/{name}")
    for group in more:
        out.extend(str(t) for t in group)
    return [p for p in dict.fromkeys(out) if p != PROVENANCE]


def extractions(config: dict) -> list[Extraction]:
    """Every (set, model) pair whose set's modality is one of the model's towers.

    Speech recognisers (``ASR_FAMILIES``) embed nothing; the transcript sets (``ASR_SETS``)
    are embedded only when ``asr.model`` is set.
    """
    out = []
    with_asr = asr_model(config) is not None
    for set_name in STUDY_SETS + tuple(corpus_sets(config)):
        if set_name in ASR_SETS and not with_asr:
            continue
        for model, spec in config["models"].items():
            if spec.get("family") in ASR_FAMILIES:
                continue
            if modality(set_name) in spec["towers"]:
                out.append(Extraction(set_name, model))
    return out


# ------------------------------------------------------------------------------ ASR cascade
def asr_model(config: dict) -> str | None:
    """The models entry that transcribes spoken captions (``asr.model``), or None."""
    return (config.get("asr") or {}).get("model") or None


def check_asr(config: dict) -> None:
    name = asr_model(config)
    if name is None:
        return
    models = config["models"]
    if name not in models:
        raise ConfigError(f"asr.model: unknown model {name!r}; models are {sorted(models)}")
    family = models[name].get("family")
    if family not in ASR_CAPABLE_FAMILIES:
        raise ConfigError(f"asr.model: model {name!r} has family {family!r}; speech recognition needs a "
                          f"Whisper checkpoint (family one of {list(ASR_CAPABLE_FAMILIES)})")


def retrieval_queries(entry: dict) -> list[str]:
    """The query set(s) of a retrieval entry: one, or two for ``fusion`` (mode default if unset)."""
    queries = entry.get("queries") or DEFAULT_QUERIES[entry["mode"]]
    return [queries] if isinstance(queries, str) else list(queries)


def retrieval_entry(entry: dict) -> dict:
    """A retrieval entry with ``queries`` filled in: a set name, or a list of two for fusion."""
    queries = retrieval_queries(entry)
    return {**entry, "queries": queries[0] if len(queries) == 1 else queries}


def retrieval_manifest_set(queries: list[str]) -> str:
    """Which query set's manifest maps captions to images (a transcript set first: its
    manifest also carries the reference text and transcripts the WER row needs)."""
    return next((q for q in queries if q in ASR_SETS), queries[0])


def check_retrieval_entry(entry: dict, models: dict, asr: str | None) -> None:
    where = f"analysis.retrieval[{entry['name']}]"
    name, mode = entry["model"], entry["mode"]
    if name not in models:
        raise ConfigError(f"{where}: unknown model {name!r}; models are {sorted(models)}")
    queries = retrieval_queries(entry)
    if mode == "fusion":
        if len(queries) != 2 or queries[0] == queries[1]:
            raise ConfigError(f"{where}: mode fusion sums two different query sets; give "
                              f"`queries: [captions, caption_asr]` (got {entry.get('queries')!r})")
    elif len(queries) != 1:
        raise ConfigError(f"{where}: mode {mode} takes one query set, got {queries}")
    else:
        q = queries[0]
        ok = {"end_to_end": modality(q) == "audio", "cascade": q in ASR_SETS,
              "text": modality(q) == "text" and q not in ASR_SETS}[mode]
        if not ok:
            raise ConfigError(f"{where}: mode {mode} does not fit queries {q!r} (end_to_end: spoken "
                              f"captions, cascade: ASR transcripts such as caption_asr, text: caption_text)")
    if any(q in ASR_SETS for q in queries) and asr is None:
        raise ConfigError(f"{where}: queries {queries} are ASR transcripts, so set `asr.model` to a "
                          f"Whisper entry of `models` (e.g. asr: {{model: whisper-untrained}})")
    need = {modality(q) for q in queries} | {modality(entry["gallery"])}
    missing = need - set(models[name]["towers"])
    if missing:
        raise ConfigError(f"{where}: model {name!r} lacks the {sorted(missing)} tower(s) needed for "
                          f"{' + '.join(queries)} → {entry['gallery']}")


# ------------------------------------------------------------------------------ sharding
def shards_for(spec: dict) -> int:
    """How many resumable shard jobs one extraction with this model is split into (1: none)."""
    return max(int(spec.get("shards") or 1), 1)


def shard_path(set_name: str, model: str, shard: int, n_shards: int) -> str:
    """``results/embeddings/<set>/<model>.shards/<k>-of-<N>.parquet`` (k counts from 1)."""
    return f"results/embeddings/{set_name}/{model}.shards/{shard}-of-{n_shards}.parquet"


def shard_paths(set_name: str, model: str, n_shards: int) -> list[str]:
    return [shard_path(set_name, model, k, n_shards) for k in range(1, n_shards + 1)]


#: Families whose adapters expose patch features in the shared space (Adapter.dense); a
#: plugin family ("module:function") may too, which only its job can tell.
DENSE_FAMILIES = ("clip",)


def check_dense(config: dict) -> None:
    """``analysis.dense.models``: known models with text and image towers and dense features."""
    dense = config["analysis"].get("dense") or {}
    models = config["models"]
    for name in dense.get("models", []):
        if name not in models:
            raise ConfigError(f"analysis.dense.models: unknown model {name!r}; models are {sorted(models)}")
        spec = models[name]
        family = str(spec.get("family"))
        if family not in DENSE_FAMILIES and ":" not in family:
            raise ConfigError(
                f"analysis.dense.models: {name!r} is family {family!r}, which has no patch features in a "
                f"shared space; families that do: {list(DENSE_FAMILIES)} (or a plugin module:function)")
        need = {"text", "image", modality(dense.get("words", "pseudoword_text"))}
        missing = need - set(spec["towers"])
        if missing:
            raise ConfigError(f"analysis.dense.models: {name!r} has towers {spec['towers']}, dense maps need "
                              f"{sorted(need)}")


def dense_models(config: dict) -> list[str]:
    """The models of ``analysis.dense`` (each one job: localisation table and example maps)."""
    return list((config["analysis"].get("dense") or {}).get("models", []))


def rsa_covariate(config: dict, set_name: str, model: str) -> str | None:
    """The model whose RDM partial RSA regresses out of ``model``'s on this set, if any.

    ``analysis.rsa.covariate_model`` (config.yaml: logmel, the spectrogram) applies to the sets
    it can embed, and never to itself.
    """
    covariate = (config["analysis"].get("rsa") or {}).get("covariate_model")
    if not covariate or covariate == model or covariate not in config["models"]:
        return None
    if modality(set_name) not in config["models"][covariate]["towers"]:
        return None
    return covariate


def labelled_extractions(config: dict) -> list[Extraction]:
    """The extractions that RSA and probes run on (sets with sharp/round labels)."""
    return [e for e in extractions(config) if e.set in LABELLED_SETS]


def symbolism_name(entry: dict) -> str:
    return f"{entry['model']}-{entry['words']}-{entry['images']}"


def gpus_for(spec: dict) -> int:
    """GPUs an extraction job asks for: pretrained networks want one, controls none."""
    if "gpu" in spec:
        return int(spec["gpu"])
    return 1 if spec.get("kind", "pretrained") == "pretrained" else 0
