"""What the workflow will compute, derived from the validated config.

The rule files ask this module which (set, model) pairs to extract and which analyses to
run, so the DAG and the tests agree on one answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sets import LABELLED_SETS, SET_MODALITY

#: The sets the default study synthesises; each is embedded by every model with its tower.
STUDY_SETS = tuple(SET_MODALITY)


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
    for entry in config["analysis"].get("symbolism", []):
        name = entry["model"]
        if name not in models:
            raise ConfigError(
                f"analysis.symbolism: unknown model {name!r}; models are {sorted(models)}"
            )
        need = {SET_MODALITY[entry["words"]], SET_MODALITY[entry["images"]]}
        missing = need - set(models[name]["towers"])
        if missing:
            raise ConfigError(
                f"analysis.symbolism: model {name!r} has towers {models[name]['towers']} but "
                f"scoring {entry['words']} against {entry['images']} needs {sorted(need)}"
            )
    for entry in config["analysis"].get("retrieval", []):
        name = entry["model"]
        if name not in models:
            raise ConfigError(
                f"analysis.retrieval[{entry['name']}]: unknown model {name!r}; "
                f"models are {sorted(models)}"
            )
        need = {SET_MODALITY[entry["queries"]], SET_MODALITY[entry["gallery"]]}
        missing = need - set(models[name]["towers"])
        if missing:
            raise ConfigError(
                f"analysis.retrieval[{entry['name']}]: model {name!r} lacks the "
                f"{sorted(missing)} tower(s) needed for {entry['queries']} → {entry['gallery']}"
            )
    for name, spec in models.items():
        if spec.get("kind") == "untrained" and not spec.get("source"):
            raise ConfigError(
                f"models.{name}: an untrained control needs `source`, the folder of its "
                "architecture config"
            )
        if spec.get("kind") == "pretrained" and not spec.get("source"):
            raise ConfigError(f"models.{name}: a pretrained model needs `source` (a hub id or folder)")
    names = [e["name"] for e in config["analysis"].get("retrieval", [])]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"analysis.retrieval: names must be unique, repeated: {sorted(dup)}")


def extractions(config: dict) -> list[Extraction]:
    """Every (set, model) pair whose set's modality is one of the model's towers."""
    out = []
    for set_name in STUDY_SETS:
        for model, spec in config["models"].items():
            if SET_MODALITY[set_name] in spec["towers"]:
                out.append(Extraction(set_name, model))
    return out


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
