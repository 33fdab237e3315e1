"""Models: one narrow, HEAR-like interface over every family (see docs/CONTRACTS.md).

::

    from avprobe.models import load_model
    adapter = load_model(name, spec, model_dir=None, device="auto")
    adapter.towers                          # ("text", "image")
    adapter.layers("image")                 # ["0", "1", ..., "4", "joint"]
    adapter.embed("image", images, layers=None)   # {layer: (B, D) float32}

``spec`` is the model's entry of ``config["models"]``: ``family``, ``kind`` (baseline | untrained
| pretrained), ``source`` (hub id or local folder), ``revision``, ``towers``, ``batch_size``,
``layers`` (names or indices, see :func:`avprobe.models.base.select_layers`), ``pooling``
(``mean`` | ``max`` | ``cls`` | ``last``, or ``{tower: pooling}``), ``dtype`` (``bfloat16`` /
``float16`` are used on a GPU only). ``model_dir`` is the folder of an untrained control built by
the ``build_untrained_model`` rule; it takes the place of ``source``.

Families (``FAMILIES``): ``logmel``, ``pixels`` (baselines); ``hf_audio`` (HuBERT, wav2vec 2.0,
WavLM, data2vec-audio), ``whisper_encoder``, ``ast``, ``clap``, ``clip``, ``siglip``,
``hf_image`` (DINOv2, ViT), ``hf_text`` (BERT-like). Speech recognition for the ASR→text cascade
is :func:`avprobe.models.asr.transcribe`; a ``models`` entry of family ``whisper_asr`` is a
recogniser only (named by ``asr.model``, see :mod:`avprobe.cascade`) and embeds no set.

Plugins
-------
A family of the form ``"package.module:function"`` is imported and called as
``function(name, spec, model_dir, device)``; it must return an :class:`Adapter` (subclass
:class:`avprobe.models.base.Adapter` and implement ``layers`` and ``_embed``, or provide
``towers``, ``layers(tower)``, ``embed(tower, items, layers=None)`` and ``provenance()``
yourself). The module must be importable by the Snakemake job, e.g. installed in the
environment or placed beside ``workflow/scripts``::

    models:
      my-model:
        family: mylab.avprobe_plugin:load
        towers: [audio]

Offline
-------
A hub id that is neither a local folder nor in the Hugging Face cache fails with one
:class:`ModelUnavailableError` line naming the model and the fix (run the ``prefetch_models``
rule with internet, or point ``HF_HOME`` at a cache that holds it).
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping

from .base import Adapter, ModelUnavailableError, pool, select_device, select_layers  # noqa: F401


def _lazy(module: str, cls: str) -> Callable[..., Adapter]:
    def factory(name, spec, model_dir=None, device="auto"):
        mod = importlib.import_module(f"{__name__}.{module}")
        return getattr(mod, cls)(name, spec, model_dir=model_dir, device=device)

    factory.__qualname__ = f"{module}.{cls}"
    return factory


#: family name → factory(name, spec, model_dir, device) -> Adapter
FAMILIES: dict[str, Callable[..., Adapter]] = {
    "logmel": _lazy("baselines", "LogMelAdapter"),
    "pixels": _lazy("baselines", "PixelsAdapter"),
    "hf_audio": _lazy("hf", "HFAudioAdapter"),
    "whisper_encoder": _lazy("hf", "WhisperEncoderAdapter"),
    "ast": _lazy("hf", "ASTAdapter"),
    "clap": _lazy("hf", "CLAPAdapter"),
    "clip": _lazy("hf", "CLIPAdapter"),
    "siglip": _lazy("hf", "SigLIPAdapter"),
    "hf_image": _lazy("hf", "HFImageAdapter"),
    "hf_text": _lazy("hf", "HFTextAdapter"),
}


def resolve_family(family: str) -> Callable[..., Adapter]:
    """The factory of a registered family, or of a ``module:function`` plugin."""
    if family in FAMILIES:
        return FAMILIES[family]
    if ":" in family:
        module, _, func = family.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"plugin family {family!r}: cannot import {module!r} ({err})") from err
        factory = getattr(mod, func, None)
        if not callable(factory):
            raise ValueError(f"plugin family {family!r}: {module!r} has no function {func!r}")
        return factory
    raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)} "
                     "or a plugin 'module:function'")


def load_model(name: str, spec: Mapping, model_dir=None, device: str = "auto") -> Adapter:
    """Load the model ``name`` described by ``spec`` (its ``config['models']`` entry)."""
    family = spec.get("family")
    if not family:
        raise ValueError(f"model {name!r}: the spec has no 'family'")
    adapter = resolve_family(str(family))(name, dict(spec), model_dir, device)
    for attr in ("towers", "layers", "embed"):
        if not hasattr(adapter, attr):
            raise TypeError(f"model {name!r}: family {family!r} returned {type(adapter).__name__}, "
                            f"which has no {attr!r}; it must return an avprobe Adapter")
    return adapter


__all__ = ["Adapter", "FAMILIES", "ModelUnavailableError", "load_model", "resolve_family",
           "select_layers", "pool", "select_device"]
