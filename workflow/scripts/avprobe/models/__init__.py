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

Families are declared once, in :mod:`avprobe.models.registry` (towers, shared spaces, named
layers, weights, licence); ``FAMILIES`` maps each that embeds to its lazy factory. Speech
recognition for the ASR→text cascade is :func:`avprobe.models.asr.transcribe`; a ``models`` entry of family ``whisper_asr`` is a
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

from . import registry
from .base import Adapter, ModelUnavailableError, pool, select_device, select_layers  # noqa: F401


def _factory(family: "registry.Family") -> Callable[..., Adapter]:
    def factory(name, spec, model_dir=None, device="auto"):
        return family.factory()(name, spec, model_dir=model_dir, device=device)

    factory.__qualname__ = family.adapter.replace(":", ".")
    return factory


#: family name → factory(name, spec, model_dir, device) -> Adapter, for every family that embeds.
#: The declarations themselves (towers, spaces, layers, weights, licence) are
#: :data:`avprobe.models.registry.FAMILIES`.
FAMILIES: dict[str, Callable[..., Adapter]] = {
    name: _factory(fam) for name, fam in registry.FAMILIES.items() if fam.embeds
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
