"""Embedding extraction: one stimulus set through one model, every selected layer, one file.

The output (``results/embeddings/<set>/<model>.parquet``) is written by
:func:`avprobe.io.write_embeddings`: columns stimulus_id, layer, layer_index, embedding; one row
group per layer; rows in manifest order within a layer; provenance in the ``avprobe`` schema
metadata (model, source, revision, kind, family, tower, dtype, device, pooling, package versions,
config hash of the spec).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from . import io
from .runtime import limit_threads
from .sets import SET_MODALITY

log = logging.getLogger("avprobe")

DEFAULT_BATCH_SIZE = 16


def _audio_lengths(manifest_path, paths) -> list[float]:
    import soundfile as sf

    out = []
    for rel in paths:
        info = sf.info(str(io.resolve_stimulus_path(manifest_path, rel)))
        out.append(info.frames / float(info.samplerate))
    return out


def load_audio(path) -> tuple[np.ndarray, int]:
    """A mono float32 waveform and its rate (channels are averaged)."""
    import soundfile as sf

    wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return wave.mean(axis=1).astype(np.float32, copy=False), int(rate)


def load_image(path) -> np.ndarray:
    """An HxWx3 uint8 RGB array."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _order(df, modality: str, manifest_path) -> np.ndarray:
    """Processing order that keeps similar lengths together (less padding); stable."""
    if modality == "audio":
        keys = _audio_lengths(manifest_path, df["path"].tolist())
    elif modality == "text":
        keys = df["text"].astype(str).str.len().tolist()
    else:
        return np.arange(len(df))
    return np.argsort(np.asarray(keys), kind="stable")


def extract_embeddings(
    manifest_path: str | os.PathLike,
    set_name: str,
    model_name: str,
    spec: Mapping,
    out_path: str | os.PathLike,
    model_dir: str | os.PathLike | None = None,
    device: str = "auto",
    threads: int = 1,
) -> dict:
    """Embed every stimulus of ``set_name`` with ``model_name``; write ``out_path``.

    Returns a summary: ``{"n_items", "layers", "rows", "seconds", "items_per_s"}``.
    """
    from tqdm.auto import tqdm

    from .models import load_model

    limit_threads(threads)
    if set_name not in SET_MODALITY:
        raise ValueError(f"unknown set {set_name!r}; sets are {sorted(SET_MODALITY)}")
    modality = SET_MODALITY[set_name]
    spec = dict(spec)
    df = io.read_manifest(manifest_path).reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{manifest_path}: the manifest has no stimuli")
    needed = "text" if modality == "text" else "path"
    if needed not in df.columns:
        raise ValueError(f"{manifest_path}: a {modality} manifest needs a {needed!r} column")

    adapter = load_model(model_name, spec, model_dir=model_dir, device=device)
    limit_threads(threads)  # torch is imported now
    if modality not in adapter.towers:
        raise ValueError(f"model {model_name!r} has no {modality!r} tower for set {set_name!r} "
                         f"(towers: {list(adapter.towers)})")
    all_layers = adapter.layers(modality)
    layers = adapter.select_layers(modality, spec.get("layers"))
    batch_size = max(int(spec.get("batch_size") or DEFAULT_BATCH_SIZE), 1)
    log.info("extracting %s (%d %s items) with %s [%s, %s] on %s: layers %s, batch %d",
             set_name, len(df), modality, model_name, adapter.family, adapter.kind,
             adapter.device, layers, batch_size)

    order = _order(df, modality, manifest_path)
    ids = df["stimulus_id"].astype(str).tolist()
    results: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    bar = tqdm(total=len(df), desc=f"{model_name}/{set_name}", unit="item", file=sys.stderr,
               mininterval=5.0, ascii=True)
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        rows = df.iloc[idx]
        if modality == "audio":
            items = [load_audio(io.resolve_stimulus_path(manifest_path, p)) for p in rows["path"]]
        elif modality == "image":
            items = [load_image(io.resolve_stimulus_path(manifest_path, p)) for p in rows["path"]]
        else:
            items = rows["text"].astype(str).tolist()
        out = adapter.embed(modality, items, layers=layers)
        for name in layers:
            mat = out[name]
            if name not in results:
                results[name] = np.zeros((len(df), mat.shape[1]), dtype=np.float32)
            results[name][idx] = mat
        bar.update(len(idx))
    bar.close()
    seconds = time.perf_counter() - start

    meta = adapter.provenance()
    meta.update(
        model=model_name,
        model_id=meta.get("source") or model_name,
        display=spec.get("display"),
        set=set_name,
        tower=modality,
        pooling=adapter.pooling(modality),
        layers=layers,
        n_items=len(df),
        batch_size=batch_size,
        model_dir=None if model_dir is None else str(model_dir),
        config_hash=io.hash_config(spec),
        spec=spec,
    )
    rows_written = io.write_embeddings(
        [(name, all_layers.index(name), (ids, results[name])) for name in layers], out_path, meta
    )
    rate = len(df) / seconds if seconds > 0 else float("inf")
    log.info("%d items in %.1f s (%.1f items/s)", len(df), seconds, rate)
    return {"n_items": len(df), "layers": layers, "rows": rows_written, "seconds": seconds,
            "items_per_s": rate}


def model_dir_from_config(config_path: str | os.PathLike | None) -> Path | None:
    """The folder of a built model, given its ``config.json`` (the rule's declared input)."""
    return None if not config_path else Path(config_path).parent
