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

log = logging.getLogger(__name__)

#: Weights for other frameworks that transformers' PyTorch path never reads.
OTHER_FRAMEWORKS = ["*.h5", "*.msgpack", "tf_model*", "flax_model*", "rust_model*", "*.ot", "*.onnx*"]


def pretrained_sources(models: Mapping[str, dict]) -> dict[str, dict]:
    """The models that come from a hub (not baselines, controls or local folders)."""
    return {
        name: {"source": spec["source"], "revision": spec.get("revision", "main")}
        for name, spec in models.items()
        if spec.get("kind", "pretrained") == "pretrained"
        and spec.get("source")
        and not os.path.isdir(spec["source"])
    }


def prefetch(models: Mapping[str, dict], out_path: str | os.PathLike) -> dict:
    """Fetch every pretrained model's files; record the resolved commit of each."""
    from huggingface_hub import snapshot_download

    resolved = {}
    for name, entry in sorted(pretrained_sources(models).items()):
        log.info("fetching %s (%s@%s)", name, entry["source"], entry["revision"])
        try:
            folder = snapshot_download(
                entry["source"], revision=entry["revision"], ignore_patterns=OTHER_FRAMEWORKS
            )
        except Exception as err:  # the hub library raises many kinds; all mean the same here
            raise RuntimeError(
                f"could not download model {name!r} ({entry['source']}@{entry['revision']}): "
                f"{err}. Run prefetch_models on a machine with internet access."
            ) from err
        resolved[name] = {**entry, "commit": os.path.basename(folder), "path": folder}
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(resolved, indent=2, sort_keys=True))
    return resolved
