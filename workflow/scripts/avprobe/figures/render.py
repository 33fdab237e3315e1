"""Draw one figure with its own module ``avprobe/figures/<figure>.py`` and write its outputs.

:func:`render_figure` is the one library call of ``workflow/scripts/figure.py``. It imports
only the module of the figure asked for; that module's ``draw(inputs, models, **options)``
returns the matplotlib figure, and its optional ``write_extras(inputs, outputs, models,
**options)`` writes further outputs (the retrieval tables).

``options`` (config ``figures.<figure>``) are keyword arguments of the module's drawing
function, except these, which every figure takes:

* ``size``: ``[width, height]`` in inches, replacing the figure's own size.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from typing import Iterable, Mapping

from . import style
from .common import as_list
from .deps import FIGURES

log = logging.getLogger("avprobe")

#: Options every figure takes (handled here, not by the figure's module).
COMMON_OPTIONS = ("size",)


def figure_module(figure: str):
    """The module drawing ``figure`` (``avprobe.figures.<figure>``)."""
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; known: {', '.join(FIGURES)}")
    return importlib.import_module(f"{__package__}.{figure}")


def check_options(figure: str, module, options: Mapping) -> None:
    """Fail with the figure's valid option names when ``options`` has an unknown key.

    The options are the keyword parameters of the module's function named like the figure,
    after its two data parameters, less the module's ``NOT_OPTIONS`` (set by the code)."""
    func = getattr(module, figure, None)
    if func is None:
        return
    params = inspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    internal = set(getattr(module, "NOT_OPTIONS", ()))
    valid = [n for n, p in list(params.items())[2:]
             if p.kind is not p.VAR_POSITIONAL and n not in internal]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"figures.{figure}: unknown option(s) {', '.join(unknown)}; valid: "
            f"{', '.join(valid + list(COMMON_OPTIONS))}"
        )


def render_figure(
    figure: str,
    *,
    pdf: str | os.PathLike,
    png: str | os.PathLike,
    models: Mapping | None = None,
    tables: Iterable[str | os.PathLike] = (),
    rdms: Iterable[str | os.PathLike] = (),
    examples: Iterable[str | os.PathLike] = (),
    shapes: str | os.PathLike | None = None,
    pseudowords: str | os.PathLike | None = None,
    markdown: str | os.PathLike | None = None,
    latex: str | os.PathLike | None = None,
    options: Mapping | None = None,
) -> None:
    """Draw ``figure`` from its inputs and write ``pdf`` + ``png`` (and retrieval tables)."""
    module = figure_module(figure)
    options = dict(options or {})
    size = options.pop("size", None)
    check_options(figure, module, options)
    inputs = {"tables": as_list(tables), "rdms": as_list(rdms), "examples": as_list(examples),
              "shapes": str(shapes) if shapes else None,
              "pseudowords": str(pseudowords) if pseudowords else None}
    log.info("%s: %d tables, %d RDM files, options %s", figure, len(inputs["tables"]),
             len(inputs["rdms"]), options or "{}")
    fig = module.draw(inputs, models, **options)
    try:
        if size:
            width, height = (float(v) for v in size)
            fig.set_size_inches(width, height)
        style.save_as(fig, pdf, png)
    finally:
        style.plt.close(fig)
    extras = {"markdown": markdown, "latex": latex}
    if hasattr(module, "write_extras") and any(extras.values()):
        module.write_extras(inputs, extras, models, **options)
    log.info("%s: wrote %s and %s", figure, pdf, png)
