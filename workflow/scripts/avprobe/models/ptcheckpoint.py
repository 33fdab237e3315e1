"""What families whose weights are one PyTorch checkpoint file share (BEATs, YAMNet).

A *checkpoint family* (``weights="checkpoint"`` in :mod:`avprobe.models.registry`) reads one
``.pt``/``.pth`` file in the layout its authors released, never a transformers repository:

* a pretrained model finds the file with :func:`avprobe.models.checkpoints.locate` from the
  entry's ``source`` (a local file, ``hf://owner/repo/file`` or an ``https://`` URL pinned by
  ``sha256``), exactly as ``prefetch_models`` left it;
* an untrained control is a folder built by the family's builder (:func:`write_control`): the
  checkpoint in the same released layout, the :data:`avprobe.models.build.BUILD_MARKER` marker
  (so provenance says ``untrained`` whatever the spec claims) and ``config.json`` written last.

:class:`CheckpointAdapter` does the locating, the kind and the provenance (file, sha256, licence);
subclasses build their network from the loaded file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Mapping

from . import checkpoints
from .base import Adapter, ModelUnavailableError, resolve_dtype, select_device
from .build import BUILD_MARKER, staged_folder, write_marker

log = logging.getLogger("avprobe")

#: ``config.json`` key of a built control naming its checkpoint file inside the folder.
CHECKPOINT_KEY = "checkpoint"


def load_torch_file(path: str | os.PathLike):
    """``torch.load`` of a released checkpoint with ``weights_only=True`` (plain containers and
    tensors only: no code from the file runs)."""
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def control_checkpoint(model_dir: str | os.PathLike) -> Path:
    """The checkpoint file of a control folder built by :func:`write_control`."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    return model_dir / config[CHECKPOINT_KEY]


def write_control(config_dir: str | os.PathLike, out_dir: str | os.PathLike, seed: int, filename: str,
                  payload, architecture: str, n_parameters: int) -> Path:
    """Write a seeded untrained control: ``filename`` (``torch.save(payload)``, the released
    layout), the build marker, then ``config.json`` (the architecture config plus
    ``{"checkpoint": filename}``) last, so a folder with a config.json is complete."""
    import torch

    config_dir, out_dir = Path(config_dir), Path(out_dir)
    config = json.loads((config_dir / "config.json").read_text())
    with staged_folder(out_dir) as tmp:
        torch.save(payload, tmp / filename)
        write_marker(tmp, {
            "kind": "untrained",
            "source": str(config_dir),
            "seed": int(seed),
            "architecture": architecture,
            "n_parameters": int(n_parameters),
            "weights_sha256": checkpoints.sha256_of(tmp / filename),
            "config_sha256": hashlib.sha256((config_dir / "config.json").read_bytes()).hexdigest(),
            "torch": torch.__version__,
        })
        (tmp / "config.json").write_text(json.dumps({**config, CHECKPOINT_KEY: filename}, indent=2) + "\n")
    log.info("built untrained %s (%d parameters, seed %d) from %s into %s",
             architecture, n_parameters, seed, config_dir, out_dir)
    return out_dir


class CheckpointAdapter(Adapter):
    """Locates the checkpoint file, sets kind/revision and reports the file in provenance.

    After ``__init__``: ``self.checkpoint_path`` (the file), ``self.checkpoint_sha256``,
    ``self.control_config`` (a built control's config.json, else None).
    """

    licence = ""

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        dev = select_device(device)
        dtype = resolve_dtype(spec.get("dtype"), dev)
        if dtype != "float32":  # these small networks gain nothing; keep one numeric path
            log.warning("model %s: %s runs in float32", name, type(self).__name__)
            dtype = "float32"
        kind = spec.get("kind") or "pretrained"
        self.control_config = None
        if model_dir is not None:
            model_dir = Path(model_dir)
            path = control_checkpoint(model_dir)
            self.control_config = json.loads((model_dir / "config.json").read_text())
            marker = model_dir / BUILD_MARKER
            if marker.is_file():
                built = json.loads(marker.read_text())
                if spec.get("kind") and kind != built.get("kind", "untrained"):
                    log.warning("model %s: spec says kind %r but %s was built untrained", name, kind, model_dir)
                kind = built.get("kind", "untrained")
            source = str(model_dir)
        else:
            if not spec.get("source"):
                raise ValueError(f"model {name!r}: a {type(self).__name__} needs `source` (a checkpoint file, "
                                 "hf://<owner>/<repo>/<file>, or an https URL with sha256)")
            source = str(spec["source"])
            path = checkpoints.locate(name, source, spec.get("revision"), spec.get("sha256"))
        super().__init__(name, spec, kind=kind, device=dev, dtype=dtype, source=source)
        self.checkpoint_path = Path(path)
        self.checkpoint_sha256 = checkpoints.sha256_of(self.checkpoint_path)
        pinned = spec.get("sha256")
        if pinned and model_dir is None and pinned != self.checkpoint_sha256:
            raise ModelUnavailableError(f"model {name!r}: {path} has sha256 {self.checkpoint_sha256}, the config "
                                        f"pins {pinned}; not used (update `sha256` only if this is the file you want)")
        self.revision = "sha256:" + self.checkpoint_sha256[:16]

    def provenance(self) -> dict:
        out = super().provenance()
        out["checkpoint"] = {"file": self.checkpoint_path.name, "sha256": self.checkpoint_sha256,
                             "pinned_sha256": self.spec.get("sha256")}
        out["licence"] = self.licence
        return out
