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

from .models.registry import FAMILIES, Space, is_plugin, spaces_of
from .sets import ASR_SETS, LABELLED_SETS, ON_DEMAND_SETS, SET_MODALITY, WORD_FORMS, corpus_sets, modality

#: The sets the default study synthesises; each is embedded by every model with its tower
#: (the transcript sets of ASR_SETS only when ``asr.model`` is set).
STUDY_SETS = tuple(SET_MODALITY)

#: Families that only transcribe speech (the recogniser of the cascade); they embed no set.
ASR_FAMILIES = tuple(n for n, f in FAMILIES.items() if not f.embeds)
#: Families whose checkpoint can serve as ``asr.model`` (a whisper_encoder entry's source is a
#: whole Whisper checkpoint, so the same entry can transcribe).
ASR_CAPABLE_FAMILIES = tuple(n for n, f in FAMILIES.items() if f.asr)
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


def check_sources(config: dict, basedir: str | Path) -> None:
    """Model sources that can be checked before any job: an untrained control's architecture
    folder must exist (with ``config.json``, relative paths taken from the workflow folder), and a
    pretrained ``source`` written as a path (``/…``, ``./…``, ``../…``, ``~…``) must exist — a hub id
    is ``owner/name``, never a path."""
    for name, spec in config["models"].items():
        source = spec.get("source")
        if not source:
            continue
        path = Path(source).expanduser()
        path = path if path.is_absolute() else Path(basedir) / path
        kind = spec.get("kind", "pretrained")
        if kind == "untrained":
            family = FAMILIES.get(str(spec.get("family")))
            marker = "config.json"
            if not (path / marker).is_file():
                raise ConfigError(
                    f"models.{name}.source: {source!r} is not an architecture config folder (no {path / marker}); "
                    "an untrained control is built from such a folder, e.g. resources/model_configs/"
                    f"{(family.test_configs or ('<config>',))[0] if family else '<config>'}")
        elif kind == "pretrained" and str(source).startswith(("/", "./", "../", "~")) and not path.exists():
            raise ConfigError(f"models.{name}.source: the local path {source!r} does not exist; give an existing "
                              "folder (or file), or a hub id such as 'facebook/hubert-base-ls960'")


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Validate ``config`` against the JSON schema, filling its defaults (Snakemake's validator).

    A violation raises one ConfigError line: where in the config, what is wrong and, for a
    misspelled name (a family, a key, an enum value), the closest valid one — instead of the
    validator's dump of the schema.
    """
    from snakemake.utils import validate

    try:
        validate(config, str(schema_path))
    except Exception:
        message = _schema_message(config, schema_path)
        if message is None:
            raise
        raise ConfigError(message) from None


def _schema_message(config: dict, schema_path: str | Path) -> str | None:
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "config"
    allowed: list = []
    for sub in [error.schema, *error.schema.get("anyOf", []), *error.schema.get("oneOf", [])]:
        allowed += [v for v in sub.get("enum", []) if isinstance(v, str)]
    if error.validator == "additionalProperties":
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        known = sorted(error.schema.get("properties", {}))
        close = difflib.get_close_matches(str(extra[0]), known, n=1) if extra else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"config {where}: unknown key {extra[0]!r}{hint}; allowed keys: {known}"
    if allowed and isinstance(error.instance, str):
        close = difflib.get_close_matches(error.instance, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        plugin = " or a plugin 'package.module:function'" if where.endswith(".family") else ""
        return f"config {where}: {error.instance!r} is not allowed{hint}; allowed: {allowed}{plugin}"
    return f"config {where}: {error.message}"


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
        symbolism_space(config, entry)
        if entry["words"] in ASR_SETS and asr_model(config) is None:
            raise ConfigError(f"analysis.symbolism[{symbolism_name(entry)}]: words {entry['words']!r} are ASR "
                              "transcripts, so set `asr.model` to a Whisper entry of `models` "
                              "(e.g. asr: {model: whisper-untrained})")
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
        for set_name in spec.get("sets") or []:
            if set_name not in STUDY_SETS + tuple(corpus_sets(config)):
                raise ConfigError(f"models.{name}.sets: {set_name!r} is not a set of this study; sets are "
                                  f"{list(STUDY_SETS + tuple(corpus_sets(config)))}")
            if modality(set_name) not in spec["towers"]:
                raise ConfigError(f"models.{name}.sets: {set_name!r} is {modality(set_name)}, but the model's "
                                  f"towers are {spec['towers']}")


# ------------------------------------------------------------------------------ model entries
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
    # only a transformers folder has this layout; checkpoint families name one file as source
    if (spec.get("kind", "pretrained") != "pretrained" or not source or not Path(source).is_dir()
            or family not in FAMILIES or FAMILIES[family].weights != "transformers"):
        return
    missing = missing_weights(source)
    if missing:
        raise ConfigError(f"models.{name}: the local folder {str(source)!r} has no weights: missing "
                          f"{' or '.join(missing) if missing == list(WEIGHT_FILES) else ', '.join(missing)}. "
                          "Copy the checkpoint's weight files into it (or point `source` at a hub id)")


def check_model_keys(name: str, spec: dict, allowed) -> None:
    """A built-in family's entry may only have known keys (catches typos such as ``layer:``)."""
    family = str(spec.get("family", ""))
    if allowed is None or family not in FAMILIES:  # plugins take their own keys
        return
    # keys some family declares as its own are allowed only for that family (n_mels is a log-mel
    # setting, not a HuBERT one), even though the schema lists them for every entry
    family_only = {k for f in FAMILIES.values() for k in f.config_keys}
    # a built-in family's spaces are declared in the registry, not in the config
    known = (set(allowed) - family_only - {"spaces"}) | set(FAMILIES[family].config_keys)
    if FAMILIES[family].weights != "checkpoint":  # the hash pins a checkpoint file's URL
        known.discard("sha256")
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
    if selectors in (None, "all") or family not in FAMILIES:
        return
    named = FAMILIES[family].layer_names
    all_named = FAMILIES[family].all_named
    for sel in selectors:
        if isinstance(sel, bool):
            raise ConfigError(f"models.{name}.layers: {sel!r} is not a layer; use indices or names")
        if isinstance(sel, int) or re.fullmatch(r"-?\d+", str(sel)):
            index = int(sel)
            if all_named and not -len(named) <= index < len(named):
                raise ConfigError(f"models.{name}.layers: index {index} is out of range; family {family!r} "
                                  f"has {len(named)} layers {list(named)} (indices 0..{len(named) - 1})")
            continue
        if sel not in named:
            what = (f"its layers are {list(named)}" if all_named else
                    "its layers are hidden states selected by index (0 = embedding output, -1 = last "
                    "block; or the strings '0', '1', …)" + (f" and the named layers {list(named)}" if named else ""))
            raise ConfigError(f"models.{name}.layers: unknown layer {sel!r} for family {family!r}; {what}")


# ------------------------------------------------------------------------------ shared spaces
def resolve_space(config: dict, model: str, towers, where: str, space: str | None = None,
                  unaligned: bool = False) -> Space | None:
    """The shared space in which ``model`` compares ``towers``, or None for an *unaligned* request.

    A family's spaces come from :mod:`avprobe.models.registry` (a plugin's from its ``spaces``
    config key). With one space joining the towers it is chosen; with several, ``space`` must
    name one; with none, the comparison is refused unless ``unaligned`` is set, in which case
    hidden layers of equal width are compared and every row says ``unaligned``.

    Raises ConfigError naming ``where`` (the config path of the request) and the fix.
    """
    spec = config["models"][model]
    towers = set(towers)
    missing = towers - set(spec["towers"])
    if missing:
        raise ConfigError(f"{where}: model {model!r} has towers {spec['towers']} but this needs "
                          f"{sorted(towers)} (missing {sorted(missing)})")
    fitting = [s for s in spaces_of(spec) if towers <= set(s.towers)]
    if space is not None:
        chosen = [s for s in fitting if s.name == space]
        if not chosen:
            raise ConfigError(f"{where}: model {model!r} has no space {space!r} joining {sorted(towers)}; "
                              f"its spaces that do: {[s.name for s in fitting] or 'none'}")
        return chosen[0]
    if len(fitting) == 1:
        return fitting[0]
    if len(fitting) > 1:
        raise ConfigError(f"{where}: model {model!r} has several spaces joining {sorted(towers)}: "
                          f"{[s.name for s in fitting]}; name one with `space:`")
    if unaligned:
        return None
    declared = [f"{s.name} ({'+'.join(s.towers)})" for s in spaces_of(spec)]
    raise ConfigError(f"{where}: model {model!r} has no shared space joining {sorted(towers)} (its spaces: "
                      f"{declared or 'none'}), so its towers' embeddings are not comparable; to compare "
                      "hidden layers that no space aligns anyway, set `unaligned: true` (rows are "
                      "labelled unaligned)")


def symbolism_space(config: dict, entry: dict) -> Space | None:
    """The space a symbolism entry scores words and anchors in (None: explicitly unaligned)."""
    where = f"analysis.symbolism[{symbolism_name(entry)}]"
    towers = {modality(entry["words"]), modality(entry["images"])}
    return resolve_space(config, entry["model"], towers, where, entry.get("space"), entry.get("unaligned", False))


#: The speech-vs-text-vs-cascade table (one per run).
SYMBOLISM_FORMS_TABLE = "results/tables/symbolism/forms.parquet"


def symbolism_forms_entries(config: dict) -> list[dict]:
    """The symbolism entries the speech-vs-text-vs-cascade comparison reads
    (:mod:`avprobe.analysis.symbolism_forms`): those of a model and anchor set scored in two or
    more forms of the words (each in its own shared space). Each: ``name, model, words, images, space, space_layer,
    architecture, kind``."""
    rows = []
    for entry in config["analysis"].get("symbolism", []):
        space = symbolism_space(config, entry)
        if space is None or entry["words"] not in WORD_FORMS:
            continue
        spec = config["models"][entry["model"]]
        family = FAMILIES.get(str(spec.get("family")))
        rows.append({"name": symbolism_name(entry), "model": entry["model"], "words": entry["words"],
                     "images": entry["images"], **space_params(space),
                     "architecture": family.architecture if family else spec.get("architecture", "unknown"),
                     "kind": spec.get("kind", "pretrained")})
    key = lambda r: (r["model"], r["images"])  # noqa: E731
    counts: dict = {}
    for r in rows:
        counts.setdefault(key(r), set()).add(r["words"])
    return [r for r in rows if len(counts[key(r)]) > 1]


def retrieval_space(config: dict, entry: dict) -> Space | None:
    """The space a retrieval entry ranks its gallery in (None: explicitly unaligned)."""
    towers = {modality(q) for q in retrieval_queries(entry)} | {modality(entry["gallery"])}
    return resolve_space(config, entry["model"], towers, f"analysis.retrieval[{entry['name']}]",
                         entry.get("space"), entry.get("unaligned", False))


def space_params(space: Space | None) -> dict:
    """What an analysis job is told of its space: ``{space, space_layer}`` (None, None: unaligned)."""
    return {"space": None if space is None else space.name, "space_layer": None if space is None else space.layer}


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
    """The (set, model) pairs some analysis reads, in set order then model order.

    * RSA and probes: every labelled set (``LABELLED_SETS``) with every model that has its tower;
    * sound symbolism: each entry's words and anchors with its model;
    * retrieval: each entry's queries and gallery with its model;
    * ``models.<m>.sets``: further sets a user asks that model to embed.

    Speech recognisers (``ASR_FAMILIES``) embed nothing; a set of ``ON_DEMAND_SETS`` (transcripts,
    which also need ``asr.model``; text anchors) exists only when an analysis reads it. Any other
    pair can still be asked for as a target, ``results/embeddings/<set>/<model>.parquet``.
    """
    models = config["models"]
    analysis = config["analysis"]
    sets = [s for s in STUDY_SETS + tuple(corpus_sets(config))
            if s not in ON_DEMAND_SETS or s in on_demand_sets_used(config)]
    wanted: set[tuple[str, str]] = set()
    for model, spec in models.items():
        if spec.get("family") in ASR_FAMILIES:
            continue
        wanted |= {(s, model) for s in sets if s in LABELLED_SETS and modality(s) in spec["towers"]}
        wanted |= {(s, model) for s in spec.get("sets") or []}
    for entry in analysis.get("symbolism", []):
        wanted |= {(entry["words"], entry["model"]), (entry["images"], entry["model"])}
    for entry in analysis.get("retrieval", []):
        wanted |= {(q, entry["model"]) for q in retrieval_queries(entry)} | {(entry["gallery"], entry["model"])}
    return [Extraction(s, m) for s in sets for m in models if (s, m) in wanted]


def on_demand_sets_used(config: dict) -> set[str]:
    """The on-demand sets some analysis reads (retrieval queries, symbolism words and anchors);
    transcript sets only when ``asr.model`` is set."""
    analysis = config["analysis"]
    used = {q for e in analysis.get("retrieval", []) for q in retrieval_queries(e)}
    used |= {s for e in analysis.get("symbolism", []) for s in (e["words"], e["images"])}
    if asr_model(config) is None:
        used -= set(ASR_SETS)
    return used & set(ON_DEMAND_SETS)


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
    retrieval_space({"models": models}, entry)


# ------------------------------------------------------------------------------ sharding
def shards_for(spec: dict) -> int:
    """How many resumable shard jobs one extraction with this model is split into (1: none)."""
    return max(int(spec.get("shards") or 1), 1)


def shard_path(set_name: str, model: str, shard: int, n_shards: int) -> str:
    """``results/embeddings/<set>/<model>.shards/<k>-of-<N>.parquet`` (k counts from 1)."""
    return f"results/embeddings/{set_name}/{model}.shards/{shard}-of-{n_shards}.parquet"


def shard_paths(set_name: str, model: str, n_shards: int) -> list[str]:
    return [shard_path(set_name, model, k, n_shards) for k in range(1, n_shards + 1)]


#: Families whose adapters expose patch features in a shared space (Adapter.dense); a
#: plugin family ("module:function") may too, which only its job can tell.
DENSE_FAMILIES = tuple(n for n, f in FAMILIES.items() if f.dense)


def check_dense(config: dict) -> None:
    """``analysis.dense.models``: known models with dense features in a space joining the image
    tower, the tower of the queries (text phrases or spoken captions) and that of the words."""
    dense = config["analysis"].get("dense") or {}
    models = config["models"]
    for name in dense.get("models", []):
        if name not in models:
            raise ConfigError(f"analysis.dense.models: unknown model {name!r}; models are {sorted(models)}")
        family = str(models[name].get("family"))
        if family not in DENSE_FAMILIES and not is_plugin(family):
            raise ConfigError(
                f"analysis.dense.models: {name!r} is family {family!r}, which has no patch features in a "
                f"shared space; families that do: {list(DENSE_FAMILIES)} (or a plugin module:function)")
        dense_space(config, name)


#: The query set of each dense query form, and the words set that goes with it under ``auto``.
DENSE_QUERY_TOWER = {"text": "text", "speech": "audio"}
DENSE_WORDS_FOR = {"text": "pseudoword_text", "speech": "pseudowords"}


def dense_query(config: dict, model: str) -> str:
    """How ``model``'s dense maps are prompted: ``text`` (object phrases) or ``speech`` (the
    spoken captions). ``analysis.dense.query: auto`` (the default) takes text when one of the
    model's spaces joins text and image, else speech when one joins audio and image."""
    dense = config["analysis"].get("dense") or {}
    query = dense.get("query", "auto") or "auto"
    if query != "auto":
        return query
    spaces = spaces_of(config["models"][model])
    for form in ("text", "speech"):
        if any({"image", DENSE_QUERY_TOWER[form]} <= set(s.towers) for s in spaces):
            return form
    towers = set(config["models"][model].get("towers") or ())
    return "speech" if "audio" in towers and "text" not in towers else "text"


def dense_words(config: dict, model: str) -> str:
    """The words set of the kiki/bouba example maps (``auto``: spoken words for speech queries)."""
    dense = config["analysis"].get("dense") or {}
    words = dense.get("words", "auto") or "auto"
    return DENSE_WORDS_FOR[dense_query(config, model)] if words == "auto" else words


def dense_space(config: dict, model: str) -> Space:
    """The space dense maps of ``model`` are computed in: it joins the image tower, the tower of
    the queries (text for object phrases, audio for spoken captions, :func:`dense_query`) and
    the modality of the words (:func:`dense_words`)."""
    dense = config["analysis"].get("dense") or {}
    towers = {"image", DENSE_QUERY_TOWER[dense_query(config, model)], modality(dense_words(config, model))}
    return resolve_space(config, model, towers, "analysis.dense.models", dense.get("space"))


def dense_params(config: dict, model: str) -> dict:
    """What a dense job is told of its model: ``{query, words, space, space_layer}``."""
    return {"query": dense_query(config, model), "words": dense_words(config, model),
            **space_params(dense_space(config, model))}


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
    """``<model>-<words>-<images>``, plus ``-<space>`` when the entry names one and
    ``-unaligned`` for an unaligned request, so two entries never share a table."""
    name = f"{entry['model']}-{entry['words']}-{entry['images']}"
    if entry.get("space"):
        name += f"-{entry['space']}"
    return name + ("-unaligned" if entry.get("unaligned") else "")


def gpus_for(spec: dict) -> int:
    """GPUs an extraction job asks for: pretrained networks want one, controls none."""
    if "gpu" in spec:
        return int(spec["gpu"])
    return 1 if spec.get("kind", "pretrained") == "pretrained" else 0


# ------------------------------------------------------------------------------ describing the study
def describe(config: dict, figures: list[str]) -> str:
    """A plain-text overview of what the config asks for: models (family, kind, towers, spaces),
    the sets each embeds, the analyses and the figures (``snakemake list_study`` prints it)."""
    lines = ["models:"]
    for name, spec in config["models"].items():
        spaces = ", ".join(f"{s.name} ({s.layer})" for s in spaces_of(spec)) or "none"
        lines.append(f"  {name}: family {spec.get('family')}, {spec.get('kind', 'pretrained')}, "
                     f"towers {'+'.join(spec['towers'])}, spaces {spaces}")
    by_model: dict[str, list[str]] = {}
    for e in extractions(config):
        by_model.setdefault(e.model, []).append(e.set)
    lines.append("embeddings (set per model; more with models.<m>.sets):")
    lines += [f"  {m}: {', '.join(sets)}" for m, sets in by_model.items()]
    lines.append("analyses:")
    for entry in config["analysis"].get("symbolism", []):
        space = symbolism_space(config, entry)
        lines.append(f"  symbolism {symbolism_name(entry)} (space {space.name if space else 'unaligned'})")
    lines += [f"  rsa + probe {e.set} × {e.model}" for e in labelled_extractions(config)]
    for entry in config["analysis"].get("retrieval", []):
        space = retrieval_space(config, entry)
        lines.append(f"  retrieval {entry['name']} ({entry['mode']}, space {space.name if space else 'unaligned'})")
    lines += [f"  dense maps {m}" for m in dense_models(config)]
    if asr_model(config):
        lines.append(f"  speech recognition {asr_model(config)} → {', '.join(sorted(on_demand_sets_used(config) & set(ASR_SETS)))}")
    lines.append("figures: " + ", ".join(figures))
    lines.append("study targets: study_symbolism, study_probing, study_retrieval, study_dense")
    return "\n".join(lines)
