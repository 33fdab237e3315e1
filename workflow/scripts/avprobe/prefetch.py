"""Download the configured pretrained models into the local model cache.

Compute nodes of many clusters have no internet; this runs once on a login node (it is a
Snakemake localrule) so that every later job finds its weights in the cache.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Mapping

from .io import atomic_path
from .models import checkpoints
from .models.registry import FAMILIES

log = logging.getLogger(__name__)

#: Weights for other frameworks that transformers' PyTorch path never reads.
OTHER_FRAMEWORKS = ["*.h5", "*.msgpack", "tf_model*", "flax_model*", "rust_model*", "*.ot", "*.onnx*"]


def pretrained_sources(models: Mapping[str, dict]) -> dict[str, dict]:
    """What each pretrained model needs from a hub, by the weight source its family declares
    (:mod:`avprobe.models.registry`): ``{name: {"weights": "transformers" | "checkpoint",
    "source", "revision", "sha256"?, "companions": {spec_key: hub id}}}``.

    Baselines, controls and local folders/files need nothing. A plugin with a hub ``source`` is
    fetched as a transformers repository.
    """
    out = {}
    for name, spec in models.items():
        if spec.get("kind", "pretrained") != "pretrained" or not spec.get("source"):
            continue
        family = FAMILIES.get(str(spec.get("family")))
        weights = family.weights if family else "transformers"
        source = str(spec["source"])
        companions = {key: spec.get(key, default) for key, default in (family.companions if family else ())}
        companions = {k: v for k, v in companions.items() if v and not os.path.isdir(v)}
        if weights == "none":
            continue
        local = os.path.isdir(source) if weights == "transformers" else checkpoints.kind_of(source) == "local"
        if local and not companions:
            continue
        entry = {"weights": weights, "source": None if local else source,
                 "revision": spec.get("revision", "main"), "companions": companions}
        if spec.get("sha256"):
            entry["sha256"] = spec["sha256"]
        out[name] = entry
    return out


def _snapshot(name: str, source: str, revision: str) -> dict:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(source, revision=revision, ignore_patterns=OTHER_FRAMEWORKS)
    return {"source": source, "revision": revision, "commit": os.path.basename(folder), "path": folder}


def prefetch(models: Mapping[str, dict], out_path: str | os.PathLike) -> dict:
    """Fetch every pretrained model's files; record the resolved commit (or sha256) of each."""
    resolved = {}
    for name, entry in sorted(pretrained_sources(models).items()):
        what = f"{entry['source']}@{entry['revision']}" if entry["source"] else "its companion models"
        log.info("fetching %s (%s)", name, what)
        try:
            record = {}
            if entry["source"] and entry["weights"] == "transformers":
                record = _snapshot(name, entry["source"], entry["revision"])
            elif entry["source"]:
                record = checkpoints.fetch(name, entry["source"], entry["revision"], entry.get("sha256"))
            record["companions"] = {key: _snapshot(name, hub_id, "main")
                                    for key, hub_id in sorted(entry["companions"].items())}
        except Exception as err:  # the hub library raises many kinds; all mean the same here
            raise RuntimeError(
                f"could not download model {name!r} ({what}): "
                f"{err}. Run prefetch_models on a machine with internet access."
            ) from err
        resolved[name] = {**entry, **record}
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(resolved, indent=2, sort_keys=True))
    return resolved
