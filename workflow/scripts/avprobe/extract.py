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
from .sets import modality as set_modality
from .validate import screen_stimuli, write_rejected

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


def _select_layers(adapter, model_name: str, tower: str, selectors) -> list[str]:
    """The configured layers, or an error naming the model's layers and how many it has."""
    try:
        return adapter.select_layers(tower, selectors)
    except ValueError as err:
        available = list(adapter.layers(tower))
        numbered = [n for n in available if n.isdigit()]
        named = [n for n in available if not n.isdigit()]
        if numbered:
            count = f"{len(numbered)} numbered layers (indices 0..{len(numbered) - 1} or -{len(numbered)}..-1)"
            count += f" and the named layers {named}" if named else ""
        else:
            count = f"{len(available)} layers {available} (indices 0..{len(available) - 1})"
        raise ValueError(f"model {model_name!r}: layers {selectors!r} do not fit its {tower} tower, which has "
                         f"{count} [{err}]. Fix models.{model_name}.layers in the config.") from None


def extract_embeddings(
    manifest_path: str | os.PathLike,
    set_name: str,
    model_name: str,
    spec: Mapping,
    out_path: str | os.PathLike,
    model_dir: str | os.PathLike | None = None,
    device: str = "auto",
    threads: int = 1,
    rejected_path: str | os.PathLike | None = None,
    on_bad_input: str = "quarantine",
    multichannel_audio: str = "downmix",
    shard: tuple[int, int] | None = None,
) -> dict:
    """Embed every stimulus of ``set_name`` with ``model_name``; write ``out_path``.

    ``shard=(k, n)`` (k counts from 1) embeds only the k-th of n contiguous blocks of the
    manifest (:func:`shard_bounds`); :func:`merge_shards` joins the n files into the file an
    unsharded run writes. ``spec['storage_dtype']`` (``float32`` default, or ``float16``) is the
    precision the embeddings are stored in.

    Unusable stimuli are quarantined first (:func:`avprobe.validate.screen_stimuli`): left out
    and listed with the reason in ``rejected_path`` (always written when given), or, with
    ``on_bad_input="fail"``, the job stops naming them. Multichannel clips are averaged by
    default here; the workflow passes the config's ``multichannel_audio`` (default quarantine).

    Returns a summary: ``{"n_items", "n_rejected", "layers", "rows", "seconds", "items_per_s"}``.
    """
    from tqdm.auto import tqdm

    from .models import load_model

    limit_threads(threads)
    try:
        modality = set_modality(set_name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    spec = dict(spec)
    df = io.read_manifest(manifest_path).reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{manifest_path}: the manifest has no stimuli")
    storage = storage_dtype(spec, model_name)
    shard_info = None
    if shard is not None:
        k, n = (int(x) for x in shard)
        lo, hi = shard_bounds(len(df), k, n)
        shard_info = {"index": k, "count": n, "start": lo, "stop": hi, "n_manifest": len(df)}
        log.info("shard %d of %d: manifest rows %d..%d of %d", k, n, lo, hi - 1, len(df))
        df = df.iloc[lo:hi].reset_index(drop=True)
    needed = "text" if modality == "text" else "path"
    if needed not in df.columns:
        raise ValueError(f"{manifest_path}: a {modality} manifest needs a {needed!r} column")
    df, rejected = screen_stimuli(df, modality, manifest_path, on_bad_input=on_bad_input,
                                  multichannel_audio=multichannel_audio, what=f"{set_name} ({manifest_path})")

    adapter = load_model(model_name, spec, model_dir=model_dir, device=device)
    limit_threads(threads)  # torch is imported now
    if modality not in adapter.towers:
        raise ValueError(f"model {model_name!r} has no {modality!r} tower for set {set_name!r} "
                         f"(towers: {list(adapter.towers)})")
    all_layers = adapter.layers(modality)
    layers = _select_layers(adapter, model_name, modality, spec.get("layers"))
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
        config_hash=spec_hash(spec),
        storage_dtype=storage,
        spec=spec,
    )
    if shard_info is not None:
        meta["shard"] = shard_info
    rows_written = io.write_embeddings(
        [(name, all_layers.index(name), (ids, results[name])) for name in layers], out_path, meta,
        dtype=storage,
    )
    if rejected_path is not None:
        write_rejected(rejected, rejected_path)
    rate = len(df) / seconds if seconds > 0 else float("inf")
    log.info("%d items in %.1f s (%.1f items/s); %d rejected", len(df), seconds, rate, len(rejected))
    return {"n_items": len(df), "n_rejected": len(rejected), "layers": layers, "rows": rows_written, "seconds": seconds,
            "items_per_s": rate}


#: Spec keys that change how the work is scheduled, not the embeddings (left out of the hash).
SCHEDULING_KEYS = ("shards",)


def spec_hash(spec: Mapping) -> str:
    """The config hash of a model entry; a sharded run hashes like the unsharded one."""
    return io.hash_config({k: v for k, v in dict(spec).items() if k not in SCHEDULING_KEYS})


def storage_dtype(spec: Mapping, model_name: str = "?") -> str:
    """``spec['storage_dtype']``: ``float32`` (default) or ``float16``."""
    value = str(spec.get("storage_dtype") or "float32")
    if value not in ("float32", "float16"):
        raise ValueError(f"model {model_name!r}: storage_dtype must be float32 or float16, not {value!r}")
    return value


def shard_bounds(n_items: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``shard`` (1..n_shards): contiguous, in manifest order,
    sizes differing by at most one."""
    if n_shards < 1 or not 1 <= shard <= n_shards:
        raise ValueError(f"shard {shard} of {n_shards}: shards count from 1 to the number of shards")
    if n_items < n_shards:
        raise ValueError(f"{n_items} stimuli cannot be split into {n_shards} shards; lower `shards`")
    return (shard - 1) * n_items // n_shards, shard * n_items // n_shards


def merge_shards(
    shard_paths,
    out_path: str | os.PathLike,
    manifest_path: str | os.PathLike | None = None,
    rejected_paths=None,
    rejected_out: str | os.PathLike | None = None,
) -> dict:
    """Join the shard files of one extraction into ``out_path``, as an unsharded run writes it.

    Checks that the shards are 1..n of n of the same set, model weights and spec, with the same
    layers, and (given the manifest) that their stimuli come in manifest order, each once. Rows
    are the shards' rows in shard order, so the result equals an unsharded extraction row for
    row; values are copied in their stored precision. Rejected tables are concatenated.
    """
    import pandas as pd

    paths = [Path(p) for p in shard_paths]
    if not paths:
        raise ValueError(f"{out_path}: no shards to merge")
    metas = [io.embeddings_metadata(p) for p in paths]
    first = metas[0]
    count = len(paths)
    for i, (path, meta) in enumerate(zip(paths, metas), start=1):
        info = meta.get("shard") or {}
        if info.get("index") != i or info.get("count") != count:
            raise ValueError(f"{path}: expected shard {i} of {count}, the file says {info or 'no shard'}")
        for key in ("model", "set", "revision", "config_hash", "storage_dtype", "layers"):
            if meta.get(key) != first.get(key):
                raise ValueError(f"{path}: {key} {meta.get(key)!r} differs from shard 1's "
                                 f"{first.get(key)!r}; rerun the shards with one config")
    layer_lists = [io.embedding_layers(p) for p in paths]
    for path, layers in zip(paths[1:], layer_lists[1:]):
        if layers != layer_lists[0]:
            raise ValueError(f"{path}: layers {layers} differ from shard 1's {layer_lists[0]}")
    merged = []
    ids: list[str] = []
    for name, index in layer_lists[0]:
        parts = [io.read_layer(p, name) for p in paths]
        layer_ids = [i for part_ids, _ in parts for i in part_ids]
        if not ids:
            ids = layer_ids
        elif layer_ids != ids:
            raise ValueError(f"{out_path}: layer {name} holds other stimuli than the first layer")
        merged.append((name, index, (layer_ids, np.concatenate([m for _, m in parts]))))
    if len(set(ids)) != len(ids):
        raise ValueError(f"{out_path}: a stimulus appears in more than one shard")
    if manifest_path is not None:
        order = {sid: i for i, sid in enumerate(io.read_manifest(manifest_path)["stimulus_id"].astype(str))}
        missing = [i for i in ids if i not in order]
        if missing:
            raise ValueError(f"{out_path}: shards hold stimuli not in {manifest_path}: {missing[:3]}")
        pos = np.array([order[i] for i in ids])
        if (np.diff(pos) <= 0).any():
            raise ValueError(f"{out_path}: the shards' stimuli are not in manifest order")
    meta = {k: v for k, v in first.items() if k != "shard"}
    meta.update(n_items=len(ids), shards=count,
                shard_devices=sorted({str(m.get("device")) for m in metas}))
    rows = io.write_embeddings(merged, out_path, meta, dtype=first.get("storage_dtype") or "float32")
    if rejected_out is not None:
        from .validate import write_rejected

        tables = [pd.read_parquet(p) for p in (rejected_paths or []) if Path(p).is_file()]
        write_rejected(pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(), rejected_out)
    log.info("merged %d shards: %d stimuli × %d layers into %s", count, len(ids), len(merged), out_path)
    return {"n_items": len(ids), "layers": [n for n, _ in layer_lists[0]], "rows": rows, "shards": count}


def model_dir_from_config(config_path: str | os.PathLike | None) -> Path | None:
    """The folder of a built model, given the folder (the rule's declared input) or its
    ``config.json``."""
    if not config_path:
        return None
    path = Path(config_path)
    return path.parent if path.name == "config.json" else path
