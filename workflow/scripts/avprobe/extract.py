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
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from . import io
from .runtime import limit_threads
from .sets import modality as set_modality
from .validate import (
    MAX_AUDIO_SECONDS,
    MIN_IMAGE_SIZE,
    quarantine,
    screen_stimuli,
    too_short_problem,
    write_rejected,
)

log = logging.getLogger("avprobe")

DEFAULT_BATCH_SIZE = 16


def _audio_lengths(manifest_path, paths) -> list[float]:
    import soundfile as sf

    out = []
    for rel in paths:
        try:
            info = sf.info(str(io.resolve_stimulus_path(manifest_path, str(rel))))
            out.append(info.frames / float(info.samplerate))
        except Exception:  # unreadable: quarantined later; any place in the order will do
            out.append(0.0)
    return out


def load_audio(path) -> tuple[np.ndarray, int]:
    """A mono float32 waveform and its rate (channels are averaged)."""
    import soundfile as sf

    wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return wave.mean(axis=1).astype(np.float32, copy=False), int(rate)


def displayed_rgb(img):
    """A PIL image as it is displayed, in RGB: the EXIF orientation tag (a phone's rotated
    JPEG) applied, and transparent pixels composited onto white (``convert("RGB")`` alone
    keeps whatever colour hides under alpha 0, often black: a black drawing on a transparent
    background would become a black square)."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")


def load_image(path) -> np.ndarray:
    """An HxWx3 uint8 RGB array, as displayed (:func:`displayed_rgb`)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(displayed_rgb(img), dtype=np.uint8)


def _order(df, modality: str, manifest_path) -> np.ndarray:
    """Processing order that keeps similar lengths together (less padding); stable."""
    if modality == "audio":
        keys = _audio_lengths(manifest_path, df["path"].tolist())
    elif modality == "text":
        keys = df["text"].astype(str).str.len().tolist()
    else:
        return np.arange(len(df))
    return np.argsort(np.asarray(keys), kind="stable")


def plan_batches(df, modality: str, manifest_path, batch_size: int) -> list[np.ndarray]:
    """The batches of a whole manifest, as arrays of manifest row positions: similar lengths
    together (:func:`_order`), ``batch_size`` each. Sharded and unsharded runs use the same
    plan (a shard takes whole batches; quarantined stimuli just leave a batch), so every
    stimulus is computed in the same batch either way, and the values are bit-identical."""
    order = _order(df, modality, manifest_path)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


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
    max_audio_seconds: float | None = MAX_AUDIO_SECONDS,
    min_image_size: int | None = MIN_IMAGE_SIZE,
    excluded_voices: Mapping[str, str] | None = None,
) -> dict:
    """Embed every stimulus of ``set_name`` with ``model_name``; write ``out_path``.

    ``shard=(k, n)`` (k counts from 1) embeds only the k-th of n contiguous runs of batches of
    the whole manifest's batch plan (:func:`plan_batches`, :func:`shard_bounds`);
    :func:`merge_shards` joins the n files into the file an unsharded run writes, byte for
    byte. ``spec['storage_dtype']`` (``float32`` default, or ``float16``) is the precision the
    embeddings are stored in.

    Unusable stimuli are quarantined first (:func:`avprobe.validate.screen_stimuli`): left out
    and listed with the reason in ``rejected_path`` (always written when given), or, with
    ``on_bad_input="fail"``, the job stops naming them. Multichannel clips are averaged by
    default here; the workflow passes the config's ``multichannel_audio`` (default quarantine).
    ``excluded_voices`` (``{voice: reason}``, from the speech QC's voice table when
    ``stimuli.tts.qc.max_wer`` is set) quarantines every row of those voices too, check
    ``voice_qc`` (:func:`avprobe.stimuli.intelligibility.quarantine_voices`).

    Audio longer than the model's input window (:meth:`Adapter.input_window_samples`) is
    truncated to its first window or chunked and pooled (``spec['long_inputs']``); the job log
    names those clips and the metadata counts them (``n_long_inputs``, ``long_input_ids``,
    ``input_window_s``). Clips longer than ``max_audio_seconds`` are quarantined (too_long).

    Returns a summary: ``{"n_items", "n_rejected", "layers", "rows", "seconds", "items_per_s"}``.
    """
    from .runtime import Progress

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
    needed = "text" if modality == "text" else "path"
    if needed not in df.columns:
        raise ValueError(f"{manifest_path}: a {modality} manifest needs a {needed!r} column")
    batch_size = max(int(spec.get("batch_size") or DEFAULT_BATCH_SIZE), 1)
    batches = plan_batches(df, modality, manifest_path, batch_size)
    df = df.assign(_pos=np.arange(len(df)))
    shard_info = None
    if shard is not None:
        k, n = (int(x) for x in shard)
        if 1 <= k <= n and len(batches) < n:
            raise ValueError(f"{len(df)} stimuli make {len(batches)} batches of {batch_size}, which cannot be split "
                             f"into {n} shards of whole batches; lower `shards` (or `batch_size`)")
        lo, hi = shard_bounds(len(batches), k, n)
        shard_info = {"index": k, "count": n, "batches": [lo, hi], "n_batches": len(batches), "n_manifest": len(df)}
        batches = batches[lo:hi]
        rows = np.sort(np.concatenate(batches))
        log.info("shard %d of %d: batches %d..%d (%d stimuli) of %d", k, n, lo, hi - 1, rows.size, len(df))
        df = df.iloc[rows].reset_index(drop=True)
    what = f"{set_name} ({manifest_path})"
    df, rejected = screen_stimuli(df, modality, manifest_path, on_bad_input=on_bad_input,
                                  multichannel_audio=multichannel_audio, what=what,
                                  max_audio_seconds=max_audio_seconds, min_image_size=min_image_size)
    if excluded_voices:
        from .stimuli.intelligibility import quarantine_voices

        df, by_voice = quarantine_voices(df, excluded_voices, manifest_path)
        rejected = pd.concat([rejected, by_voice], ignore_index=True) if len(by_voice) else rejected
        if df.empty:
            raise ValueError(f"{set_name}: every stimulus is spoken by a voice the speech QC excluded "
                             f"({sorted(excluded_voices)}); raise stimuli.tts.qc.max_wer or change the voices")

    adapter = load_model(model_name, spec, model_dir=model_dir, device=device)
    limit_threads(threads)  # torch is imported now
    if modality not in adapter.towers:
        raise ValueError(f"model {model_name!r} has no {modality!r} tower for set {set_name!r} "
                         f"(towers: {list(adapter.towers)})")
    long_ids: list[str] = []
    if modality == "audio":  # checks that need the model: its receptive field, its window
        df, more = _screen_for_model(df, adapter, model_name, manifest_path, on_bad_input, what)
        rejected = pd.concat([rejected, more], ignore_index=True)
        long_ids = _longer_than_window(df, adapter, manifest_path)
        if long_ids:
            window = adapter.input_window_samples("audio") / adapter.input_sample_rate("audio")
            log.warning("%d of %d clips of %s are longer than %s's %.2f s input window (%s): %s%s",
                        len(long_ids), len(df), set_name, model_name, window, adapter.long_inputs(),
                        ", ".join(long_ids[:10]), " …" if len(long_ids) > 10 else "")
    all_layers = adapter.layers(modality)
    layers = _select_layers(adapter, model_name, modality, spec.get("layers"))
    log.info("extracting %s (%d %s items) with %s [%s, %s] on %s: layers %s, batch %d",
             set_name, len(df), modality, model_name, adapter.family, adapter.kind,
             adapter.device, layers, batch_size)

    row_of = {int(p): i for i, p in enumerate(df["_pos"])}
    ids = df["stimulus_id"].astype(str).tolist()
    results: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    bar = Progress(len(df), f"{model_name}/{set_name}", unit="item")
    for batch in batches:
        idx = np.array([row_of[int(p)] for p in batch if int(p) in row_of], dtype=int)
        if not idx.size:
            continue
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
    keep, more = _degenerate_embeddings(df, results, layers, model_name, on_bad_input, what)
    if len(more):
        rejected = pd.concat([rejected, more], ignore_index=True)
        df = df[keep].reset_index(drop=True)
        ids = df["stimulus_id"].astype(str).tolist()
        results = {name: mat[keep] for name, mat in results.items()}

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
    if modality == "audio":
        window = adapter.input_window_samples("audio")
        kept = set(ids)
        long_ids = [i for i in long_ids if i in kept]
        meta.update(input_window_s=None if window is None else window / adapter.input_sample_rate("audio"),
                    long_inputs=adapter.long_inputs(), n_long_inputs=len(long_ids),
                    long_input_ids=long_ids)
    if shard_info is not None:
        meta["shard"] = {**shard_info, "positions": [int(p) for p in df["_pos"]]}
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


def _screen_for_model(df, adapter, model_name, manifest_path, on_bad_input, what):
    """Quarantine clips shorter than the model's receptive field (``too_short``): padded, they
    would give a vector of padding, and alone they crash the convolution."""
    import soundfile as sf

    min_samples = adapter.min_input_samples("audio")
    rate = adapter.input_sample_rate("audio")
    rows = []
    for i, rel in enumerate(df["path"].astype(str)):
        info = sf.info(str(io.resolve_stimulus_path(manifest_path, rel)))
        problem = too_short_problem(info.frames, info.samplerate, min_samples, rate, f"model {model_name!r}")
        if problem:
            rows.append((i, str(df["stimulus_id"].iloc[i]), rel, *problem))
    return quarantine(df, rows, on_bad_input=on_bad_input, what=what, stage=f"length check for {model_name}")


def _longer_than_window(df, adapter, manifest_path) -> list[str]:
    """Ids of the clips longer than the model's input window once resampled (from headers)."""
    import soundfile as sf

    window = adapter.input_window_samples("audio")
    rate = adapter.input_sample_rate("audio")
    if not window:
        return []
    out = []
    for sid, rel in zip(df["stimulus_id"].astype(str), df["path"].astype(str)):
        info = sf.info(str(io.resolve_stimulus_path(manifest_path, rel)))
        n = info.frames if not rate else int(np.ceil(info.frames * rate / float(info.samplerate)))
        if n > window:
            out.append(sid)
    return out


def _degenerate_embeddings(df, results, layers, model_name, on_bad_input, what):
    """``(keep mask, rejected table)``: a stimulus whose embedding is non-finite or exactly zero
    in any layer is never stored (``degenerate_embedding``)."""
    bad: dict[int, str] = {}
    for name in layers:
        mat = results[name]
        nonfinite = ~np.isfinite(mat).all(axis=1)
        zero = ~nonfinite & ~mat.any(axis=1)
        for i in np.flatnonzero(nonfinite):
            bad.setdefault(int(i), f"model {model_name!r} gave a non-finite embedding in layer {name}")
        for i in np.flatnonzero(zero):
            bad.setdefault(int(i), f"model {model_name!r} gave an all-zero embedding in layer {name}")
    rows = [(i, str(df["stimulus_id"].iloc[i]), str(df["path"].iloc[i]) if "path" in df.columns else "",
             "degenerate_embedding", reason) for i, reason in sorted(bad.items())]
    keep = np.ones(len(df), dtype=bool)
    keep[list(bad)] = False
    if rows:
        quarantine(df, rows, on_bad_input=on_bad_input, what=what, stage="embedding check")
    return keep, pd.DataFrame([r[1:] for r in rows], columns=["stimulus_id", "path", "check", "reason"])


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
    layers, and (given the manifest) that their stimuli sit where the manifest has them, each
    once. A shard holds whole batches of the unsharded run's batch plan (:func:`plan_batches`),
    so its rows interleave with other shards'; they are put back in manifest order by the
    positions each shard records. The result equals an unsharded extraction byte for byte
    (same batches, same arithmetic); values are copied in their stored precision. Rejected
    tables are concatenated, and temporary files a killed shard writer left are removed.
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
    positions = [(m.get("shard") or {}).get("positions") for m in metas]
    if any(p is None for p in positions):
        raise ValueError(f"{out_path}: a shard file records no manifest positions (written by an older "
                         "avprobe); rerun its shards")
    pos = np.concatenate([np.asarray(p, dtype=np.int64) for p in positions])
    perm = np.argsort(pos, kind="stable")  # shards hold whole batches: rows interleave in the manifest
    merged = []
    ids: list[str] = []
    for name, index in layer_lists[0]:
        parts = [io.read_layer(p, name) for p in paths]
        layer_ids = [i for part_ids, _ in parts for i in part_ids]
        if len(layer_ids) != len(pos):
            raise ValueError(f"{out_path}: layer {name} of the shards holds {len(layer_ids)} rows but they "
                             f"record {len(pos)} positions; rerun the shards")
        layer_ids = [layer_ids[i] for i in perm]
        if not ids:
            ids = layer_ids
        elif layer_ids != ids:
            raise ValueError(f"{out_path}: layer {name} holds other stimuli than the first layer")
        merged.append((name, index, (layer_ids, np.concatenate([m for _, m in parts])[perm])))
    if len(set(ids)) != len(ids) or len(set(pos.tolist())) != len(pos):
        raise ValueError(f"{out_path}: a stimulus appears in more than one shard")
    if manifest_path is not None:
        order = {sid: i for i, sid in enumerate(io.read_manifest(manifest_path)["stimulus_id"].astype(str))}
        missing = [i for i in ids if i not in order]
        if missing:
            raise ValueError(f"{out_path}: shards hold stimuli not in {manifest_path}: {missing[:3]}")
        if [order[i] for i in ids] != sorted(pos.tolist()):
            raise ValueError(f"{out_path}: the shards' stimuli are not where {manifest_path} has them; "
                             "the manifest changed since the shards ran — rerun them")
    meta = {k: v for k, v in first.items() if k != "shard"}
    if "long_input_ids" in first:  # as the unsharded run counts them: every shard's, in manifest order
        long = {i for m in metas for i in m.get("long_input_ids") or []}
        meta.update(long_input_ids=[i for i in ids if i in long], n_long_inputs=len(long))
    meta.update(n_items=len(ids), shards=count,
                shard_devices=sorted({str(m.get("device")) for m in metas}))
    rows = io.write_embeddings(merged, out_path, meta, dtype=first.get("storage_dtype") or "float32")
    if rejected_out is not None:
        from .validate import write_rejected

        tables = [io.read_parquet(p) for p in (rejected_paths or []) if Path(p).is_file()]
        write_rejected(pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(), rejected_out)
    for folder in sorted({p.parent for p in paths}):  # a killed writer's .<k>-of-<n>.parquet.*.tmp
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    log.info("merged %d shards: %d stimuli × %d layers into %s", count, len(ids), len(merged), out_path)
    return {"n_items": len(ids), "layers": [n for n, _ in layer_lists[0]], "rows": rows, "shards": count}


def model_dir_from_config(config_path: str | os.PathLike | None) -> Path | None:
    """The folder of a built model, given the folder (the rule's declared input) or its
    ``config.json``."""
    if not config_path:
        return None
    path = Path(config_path)
    return path.parent if path.name == "config.json" else path
