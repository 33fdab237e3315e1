"""Seeded *untrained* controls: an architecture config turned into a random-init model folder.

``build_untrained(config_dir, out_dir, seed)`` reads ``config_dir/config.json`` (a folder laid out
like a hub repository, without weights), initialises the model with ``torch.manual_seed(seed)``,
writes it with ``save_pretrained`` and copies the processor and tokenizer files beside it. The
result loads with ``from_pretrained(out_dir)``: the same code path as a pretrained hub id. A marker
file ``avprobe_build.json`` records that the weights are untrained, so a loaded model's provenance
says ``kind: untrained`` whatever the spec claims.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

log = logging.getLogger("avprobe")

#: Written next to the weights of every model built here.
BUILD_MARKER = "avprobe_build.json"

#: Files of the config folder that are not copied (save_pretrained writes its own config.json).
_SKIP = {"config.json", "make_configs.py", "README.md"}


def _model_class(config):
    """The architecture named in the config (e.g. WhisperForConditionalGeneration), else AutoModel."""
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Build a model folder in a sibling temporary folder; on success move its entries into
    ``out_dir`` with ``config.json`` last (an entry already there is replaced, a folder whole), so
    a folder with a config.json always has the files that go with it. Every builder of an
    untrained control (transformers', the checkpoint families') writes through this.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        for item in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):
            dest = out_dir / item.name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_marker(folder: Path, marker: dict) -> None:
    """The build marker (:data:`BUILD_MARKER`): provenance reads ``kind: untrained`` from it."""
    (folder / BUILD_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def build_untrained(config_dir: str | os.PathLike, out_dir: str | os.PathLike, seed: int) -> Path:
    """Build a seeded random-init model from ``config_dir`` into ``out_dir``; return ``out_dir``.

    Deterministic: the same config and seed give byte-identical ``model.safetensors``.
    """
    import torch
    import transformers
    from transformers import AutoConfig

    config_dir, out_dir = Path(config_dir), Path(out_dir)
    if not (config_dir / "config.json").is_file():
        raise FileNotFoundError(f"{config_dir}: no config.json (an architecture config folder)")
    config = AutoConfig.from_pretrained(config_dir)
    cls = _model_class(config)
    torch.manual_seed(int(seed))
    if cls is transformers.AutoModel:
        model = cls.from_config(config)
    else:
        model = cls(config)
    model = model.float().eval()
    for stale in list(out_dir.glob("*.safetensors")) + list(out_dir.glob("*.bin")) + list(
        out_dir.glob("*.index.json")
    ):
        stale.unlink()
    with staged_folder(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for item in sorted(config_dir.iterdir()):
            if item.is_file() and item.name not in _SKIP and not item.name.startswith("."):
                shutil.copyfile(item, tmp / item.name)
        weights = sorted(tmp.glob("*.safetensors"))
        digest = hashlib.sha256()
        for w in weights:
            digest.update(w.read_bytes())
        marker = {
            "kind": "untrained",
            "source": str(config_dir),
            "seed": int(seed),
            "architecture": type(model).__name__,
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "weights_sha256": digest.hexdigest(),
            "config_sha256": hashlib.sha256((config_dir / "config.json").read_bytes()).hexdigest(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
        write_marker(tmp, marker)
    log.info("built untrained %s (%d parameters, seed %d) from %s into %s",
             marker["architecture"], marker["n_parameters"], seed, config_dir, out_dir)
    return out_dir
