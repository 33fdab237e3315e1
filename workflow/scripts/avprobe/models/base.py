"""The adapter interface and the helpers every model family shares.

An :class:`Adapter` is the narrow, HEAR-like face of one model (see docs/CONTRACTS.md)::

    adapter.towers                       # e.g. ("text", "image")
    adapter.layers(tower)                # ordered layer names, e.g. ["0", ..., "4", "joint"]
    adapter.embed(tower, items, layers)  # {layer: (B, D) float32 array}
    adapter.dense(tower, items)          # optional: per-item token/patch features, shared space
    adapter.input_sample_rate("audio")   # the rate audio is resampled to (None if no audio)
    adapter.provenance()                 # revision, kind, dtype, device, versions, ...

Pooling over time/tokens/patches is mask-aware (padding never counts) and one of
``mean`` (default), ``max``, ``cls`` (first position) or ``last`` (last valid position, which is
the EOS token of a causal text tower such as CLIP's).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger("avprobe")

POOLINGS = ("mean", "max", "cls", "last")
#: What happens to a clip longer than a model's input window (``spec['long_inputs']``):
#: ``truncate`` keeps its first window; ``chunk`` embeds every window and averages them,
#: weighted by their lengths (a last piece shorter than the receptive field is dropped).
LONG_INPUTS = ("truncate", "chunk")
JOINT = "joint"
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


class ModelUnavailableError(RuntimeError):
    """A model id that is neither a local folder, nor cached, nor reachable on the hub."""


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------


class Adapter:
    """Base class of every model family; subclasses fill in ``layers`` and ``_embed``."""

    family = "?"
    #: Towers this family can have, in their natural order.
    natural_towers: tuple[str, ...] = ()

    def __init__(self, name: str, spec: Mapping, *, kind: str | None = None,
                 device: str = "cpu", dtype: str = "float32", source: str | None = None,
                 revision: str | None = None) -> None:
        self.name = name
        self.spec = dict(spec)
        wanted = tuple(self.spec.get("towers") or self.natural_towers)
        bad = [t for t in wanted if t not in self.natural_towers]
        if bad:
            raise ValueError(f"model {name!r} ({self.family}): no tower(s) {bad}; "
                             f"this family has {list(self.natural_towers)}")
        self.towers: tuple[str, ...] = wanted
        self.kind = kind or self.spec.get("kind") or "pretrained"
        self.device = str(device)
        self.dtype = dtype
        self.source = source if source is not None else self.spec.get("source")
        self.revision = revision
        self._pooling = {t: pooling_for(self.spec, t) for t in self.towers}

    # -- to be provided by families -------------------------------------------------------------
    def layers(self, tower: str) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _embed(self, tower: str, items: list, layers: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError  # pragma: no cover - abstract

    # -- shared ---------------------------------------------------------------------------------
    def input_sample_rate(self, tower: str = "audio") -> int | None:
        return None

    def native_window_samples(self, tower: str = "audio") -> int | None:
        """The longest clip (samples at :meth:`input_sample_rate`) the model itself takes in one
        pass: AST's ``max_length`` frames, Whisper's ``n_samples``, CLAP's ``max_length_s``;
        None for a family without one."""
        return None

    def input_window_samples(self, tower: str = "audio") -> int | None:
        """The input window: the native one, capped by ``spec['max_input_seconds']`` when set.
        Longer clips are truncated or chunked (``spec['long_inputs']``), so a batch never
        holds more than ``batch_size × window`` samples."""
        native = self.native_window_samples(tower)
        cap = self.spec.get("max_input_seconds")
        rate = self.input_sample_rate(tower)
        if cap is not None and rate:
            cap = max(int(round(float(cap) * rate)), 1)
            return cap if native is None else min(cap, native)
        return native

    def long_inputs(self) -> str:
        mode = str(self.spec.get("long_inputs") or "truncate")
        if mode not in LONG_INPUTS:
            raise ValueError(f"model {self.name!r}: long_inputs must be one of {LONG_INPUTS}, not {mode!r}")
        return mode

    def min_input_samples(self, tower: str = "audio") -> int | None:
        """Fewest samples (at :meth:`input_sample_rate`) that give the model one output frame:
        its convolutional receptive field or its first analysis window. Shorter clips are
        quarantined (``too_short``) instead of being embedded as padding."""
        return None

    def pooling(self, tower: str) -> str:
        self.check_tower(tower)
        return self._pooling[tower]

    def check_tower(self, tower: str) -> None:
        if tower not in self.towers:
            raise ValueError(f"model {self.name!r} has no {tower!r} tower (towers: {list(self.towers)})")

    def select_layers(self, tower: str, selectors=None) -> list[str]:
        return select_layers(self.layers(tower), selectors)

    def embed(self, tower: str, items: Sequence, layers=None) -> dict[str, np.ndarray]:
        """Embed a batch: ``{layer_name: (len(items), dim) float32}`` for the selected layers."""
        self.check_tower(tower)
        names = self.select_layers(tower, layers)
        items = list(items)
        if not items:
            return {n: np.zeros((0, 0), np.float32) for n in names}
        items = self._prepare(tower, items)
        window = self.input_window_samples(tower) if tower == "audio" else None
        if window and any(len(w) > window for w in items):
            out = self._embed_windowed(tower, items, names, int(window))
        else:
            out = self._embed(tower, items, names)
        return {n: np.ascontiguousarray(out[n], dtype=np.float32) for n in names}

    def _embed_windowed(self, tower: str, items: list, names: list[str], window: int) -> dict[str, np.ndarray]:
        """Clips longer than ``window``: their first window (``truncate``), or every window
        embedded, in batches no larger than this one, and averaged by length (``chunk``)."""
        long = sum(len(w) > window for w in items)
        mode = self.long_inputs()
        rate = self.input_sample_rate(tower) or 1
        log.info("%s: %d of %d clips are longer than the %.2f s input window; %s", self.name, long,
                 len(items), window / rate, "first window kept" if mode == "truncate" else "chunked and pooled")
        if mode == "truncate":
            return self._embed(tower, [w[:window] for w in items], names)
        minimum = self.min_input_samples(tower) or 1
        pieces, owner = [], []
        for i, w in enumerate(items):
            parts = [w[s:s + window] for s in range(0, len(w), window)]
            parts = [p for p in parts if len(p) >= minimum] or parts[:1]
            pieces.extend(parts)
            owner.extend([i] * len(parts))
        owner = np.asarray(owner)
        weights = np.asarray([len(p) for p in pieces], dtype=np.float64)
        step = max(len(items), 1)
        outs = [self._embed(tower, pieces[s:s + step], names) for s in range(0, len(pieces), step)]
        result = {}
        for n in names:
            mat = np.concatenate([np.asarray(o[n], dtype=np.float64) for o in outs])
            pooled = np.zeros((len(items), mat.shape[1]))
            np.add.at(pooled, owner, mat * weights[:, None])
            pooled /= np.bincount(owner, weights=weights, minlength=len(items))[:, None]
            result[n] = pooled.astype(np.float32)
        return result

    def dense(self, tower: str, items: Sequence) -> list[np.ndarray]:
        """Token-level features in the shared space, one array per item: an image gives its
        ``(rows, cols, D)`` patch grid, text its ``(tokens, D)`` and audio its ``(frames, D)``
        (padding left out). Their pooled counterpart is the ``joint`` layer."""
        self.check_tower(tower)
        if not self.supports_dense:
            raise NotImplementedError(
                f"model {self.name!r} ({self.family}) exposes no token-level features in a shared "
                "space; dense similarity maps need a family such as clip, or a plugin that "
                "implements Adapter._dense")
        items = list(items)
        if not items:
            return []
        return [np.ascontiguousarray(x, dtype=np.float32) for x in self._dense(tower, self._prepare(tower, items))]

    #: Whether :meth:`dense` is implemented (``_dense``) for this family.
    supports_dense = False

    def _dense(self, tower: str, items: list) -> list[np.ndarray]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _prepare(self, tower: str, items: list) -> list:
        if tower == "audio":
            return prepare_audio(items, self.input_sample_rate(tower))
        if tower == "image":
            return [prepare_image(x) for x in items]
        if tower == "text":
            return [str(x) for x in items]
        return items

    def provenance(self) -> dict:
        return {
            "model": self.name,
            "family": self.family,
            "kind": self.kind,
            "source": None if self.source is None else str(self.source),
            "revision": self.revision,
            "dtype": self.dtype,
            "device": self.device,
            "towers": list(self.towers),
            "pooling": dict(self._pooling),
            "input_sample_rate": self.input_sample_rate("audio") if "audio" in self.towers else None,
            "versions": package_versions(),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} towers={self.towers} device={self.device}>"


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Samples a stack of unpadded 1-D convolutions needs for one output frame."""
    field = 1
    for k, s in zip(reversed(list(kernels)), reversed(list(strides))):
        field = (field - 1) * int(s) + int(k)
    return field


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample a 1-D float32 waveform with soxr (high quality)."""
    if int(rate) == int(target):
        return wave
    import soxr

    return soxr.resample(wave, int(rate), int(target), quality="HQ").astype(np.float32, copy=False)


def prepare_audio(items: Iterable, target_rate: int | None) -> list[np.ndarray]:
    """``(waveform, rate)`` tuples or bare waveforms (already at ``target_rate``) → mono float32."""
    out = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2:
            wave, rate = item
        else:
            wave, rate = item, target_rate
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 2:  # (frames, channels) as soundfile returns it
            wave = wave.mean(axis=1) if wave.shape[1] < wave.shape[0] else wave.mean(axis=0)
        if wave.ndim != 1:
            raise ValueError(f"audio items must be 1-D waveforms, got shape {wave.shape}")
        if target_rate is not None and rate is not None:
            wave = resample(wave, rate, target_rate)
        out.append(np.ascontiguousarray(wave, dtype=np.float32))
    return out


def prepare_image(item) -> np.ndarray:
    """An image item as an HxWx3 uint8 array (greyscale and RGBA are converted)."""
    arr = np.asarray(item)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image items must be HxWx3 arrays, got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------------------------
# Layers and pooling
# ---------------------------------------------------------------------------------------------


def select_layers(available: Sequence[str], selectors=None) -> list[str]:
    """Pick layers by name or index; return them in the model's order.

    ``None``, ``"all"`` (the config schema's default) or an empty list selects every layer. An ``int`` (or a string like ``"-1"`` that
    is not itself a layer name) indexes the *numbered* hidden-state layers ``"0".."N"``, so
    ``0`` is the embedding output and ``-1`` the last transformer block; a family without
    numbered layers (the baselines) is indexed over all its layers. A string selects by name
    (``"joint"``, ``"mean"``, ``"3"``).
    """
    available = list(available)
    if selectors is None or (isinstance(selectors, str) and selectors == "all" and "all" not in available):
        return available
    if not isinstance(selectors, (str, int)) and len(selectors) == 0:
        return available
    if isinstance(selectors, (str, int)):
        selectors = [selectors]
    numbered = [n for n in available if n.isdigit()] or available
    chosen = set()
    for sel in selectors:
        if isinstance(sel, str) and sel in available:
            chosen.add(sel)
            continue
        try:
            index = int(sel)
        except (TypeError, ValueError):
            raise ValueError(f"no layer {sel!r}; layers are {available}") from None
        try:
            chosen.add(numbered[index])
        except IndexError:
            raise ValueError(f"layer index {index} out of range for layers {numbered}") from None
    return [n for n in available if n in chosen]


def pooling_for(spec: Mapping, tower: str) -> str:
    """The pooling of one tower: ``spec['pooling']`` is a name or a ``{tower: name}`` dict."""
    pooling = spec.get("pooling") or "mean"
    if isinstance(pooling, Mapping):
        pooling = pooling.get(tower) or "mean"
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
    return pooling


def pool(hidden, mask=None, how: str = "mean"):
    """Pool a ``(B, T, D)`` tensor over T, counting only positions where ``mask`` is true.

    A ``(B, C, H, W)`` feature map (e.g. CLAP's audio tower) is first flattened to
    ``(B, H*W, C)``.
    """
    import torch

    hidden = hidden.float()
    if hidden.dim() == 4:
        hidden = hidden.flatten(2).transpose(1, 2)
    if hidden.dim() != 3:
        raise ValueError(f"cannot pool a tensor of shape {tuple(hidden.shape)}")
    b, t, _ = hidden.shape
    if mask is None:
        mask = torch.ones(b, t, dtype=torch.bool, device=hidden.device)
    mask = mask.to(hidden.device).bool()[:, :t]
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if how == "max":
        filled = hidden.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return filled.max(1).values
    if how == "cls":
        return hidden[:, 0]
    if how == "last":
        last = (mask.long().sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(b, device=hidden.device), last]
    raise ValueError(f"pooling {how!r} is not one of {POOLINGS}")


def length_groups(waves, pad_batches: bool) -> list[list[int]]:
    """Indices of a batch to run together: all of them when padding is safe, else one group per
    clip length, so an encoder whose outputs depend on padding sees none (every clip gets the
    embedding it gets alone)."""
    if pad_batches:
        return [list(range(len(waves)))]
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        groups.setdefault(len(w), []).append(i)
    return list(groups.values())


def join_groups(parts, names, n_items: int) -> dict:
    """The inverse of :func:`length_groups`: ``parts`` is ``[(indices, {layer: (len(indices), D)})]``;
    returns ``{layer: (n_items, D) float32}`` with each group's rows back at its indices."""
    out = {}
    for name in names:
        mat = np.zeros((n_items, parts[0][1][name].shape[1]), np.float32)
        for idx, res in parts:
            mat[idx] = res[name]
        out[name] = mat
    return out


def lengths_to_mask(lengths, size: int):
    import torch

    lengths = torch.as_tensor(lengths)
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


# ---------------------------------------------------------------------------------------------
# Device, dtype, provenance, loading
# ---------------------------------------------------------------------------------------------


def select_device(device: str | None = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; anything else is passed through."""
    if device not in (None, "auto"):
        return str(device)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(requested: str | None, device: str) -> str:
    """float32 unless half precision is asked for *and* the device is a GPU."""
    name = DTYPES.get(str(requested or "float32").lower())
    if name is None:
        raise ValueError(f"dtype {requested!r} is not one of {sorted(set(DTYPES.values()))}")
    if name != "float32" and not (device.startswith("cuda") or device.startswith("mps")):
        log.warning("dtype %s is for GPUs only; using float32 on %s", name, device)
        return "float32"
    return name


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


_VERSIONS: dict | None = None


def package_versions() -> dict:
    global _VERSIONS
    if _VERSIONS is None:
        from importlib import metadata

        out = {"python": platform.python_version()}
        for pkg in ("torch", "transformers", "tokenizers", "numpy", "soxr", "avprobe"):
            if pkg == "avprobe":
                from avprobe import __version__

                out[pkg] = __version__
                continue
            try:
                out[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                out[pkg] = None
        _VERSIONS = out
    return dict(_VERSIONS)


def weights_fingerprint(folder: str | os.PathLike) -> str | None:
    """``local:<sha256[:16]>`` of a folder's weight files (all shards, in name order)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "local:" + digest.hexdigest()[:16]


def offline_message(name: str, source: str, revision: str | None, err: BaseException) -> str:
    rev = f" (revision {revision})" if revision else ""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"model {name!r}: cannot load {source!r}{rev}: it is not a local folder, and neither "
        f"the Hugging Face cache (HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}) "
        f"nor the hub could provide it [{first}]. Fix: run the `prefetch_models` rule once on a "
        f"machine with internet, or set HF_HOME to a cache that holds this model."
    )


def hf_load(loader: Callable, name: str, source: str, revision: str | None, **kwargs):
    """``loader.from_pretrained(source, revision=...)`` with one clear line when offline."""
    if revision and not Path(source).is_dir():
        kwargs["revision"] = revision
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as err:
        from .folder import rebuild_hint

        hint = rebuild_hint(source) if Path(source).is_dir() else None
        if hint:  # a built untrained control: rebuilt by build_untrained_model, not prefetched
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelUnavailableError(f"model {name!r}: cannot load {source!r} [{first}]: {hint}") from err
        if Path(source).is_dir():  # not a hub problem: say what the folder lacks
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            files = sorted(p.name for p in Path(source).iterdir())
            raise ModelUnavailableError(
                f"model {name!r}: the local folder {source!r} cannot be loaded by {getattr(loader, '__name__', loader)} "
                f"[{first}]; it holds {files[:12]}{' …' if len(files) > 12 else ''}. A checkpoint folder needs "
                "config.json, its weights (model.safetensors or pytorch_model.bin, or an index and its shards) "
                "and its processor files") from err
        raise ModelUnavailableError(offline_message(name, source, revision, err)) from err


@contextlib.contextmanager
def numpy_seed(seed: int):
    """Seed NumPy's global generator for a block (for feature extractors that draw from it)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
