"""Read a figure's inputs, draw it with :mod:`avprobe.figures.plots`, write its outputs.

:func:`render_figure` is the one library call of ``workflow/scripts/figure.py``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from ..io import TABLE_COLUMNS, atomic_path, read_manifest
from . import plots, style

log = logging.getLogger("avprobe")

#: Figures drawn from tidy tables (``tables`` input), and the function drawing each.
TABLE_FIGURES = {
    "symbolism_auc": plots.symbolism_auc,
    "symbolism_scores": plots.symbolism_scores,
    "rsa_layers": plots.rsa_layers,
    "rsa_partial": plots.rsa_partial,
    "probe_layers": plots.probe_layers,
    "retrieval_recall": plots.retrieval_recall,
}
FIGURES = tuple(TABLE_FIGURES) + ("rdm_heatmaps", "stimulus_montage")


def _as_list(paths) -> list[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [str(paths)]
    return [str(p) for p in paths]


def read_tables(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate tidy tables (extra columns may differ between files); none → empty."""
    frames = [pd.read_parquet(p) for p in _as_list(paths)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    return pd.concat(frames, ignore_index=True, sort=False)


def render_figure(
    figure: str,
    *,
    pdf: str | os.PathLike,
    png: str | os.PathLike,
    models: Mapping | None = None,
    tables: Iterable[str | os.PathLike] = (),
    rdms: Iterable[str | os.PathLike] = (),
    shapes: str | os.PathLike | None = None,
    pseudowords: str | os.PathLike | None = None,
    markdown: str | os.PathLike | None = None,
    latex: str | os.PathLike | None = None,
    options: Mapping | None = None,
) -> None:
    """Draw ``figure`` from its inputs and write ``pdf`` + ``png`` (and retrieval tables).

    ``options`` are passed to the plotting function as keyword arguments (e.g. ``layers`` for
    ``rdm_heatmaps``, ``metric`` for ``probe_layers``).
    """
    options = dict(options or {})
    if figure in TABLE_FIGURES:
        paths = _as_list(tables)
        df = read_tables(paths)
        log.info("%s: %d rows from %d tables", figure, len(df), len(paths))
        fig = TABLE_FIGURES[figure](df, models, **options)
        if figure == "retrieval_recall" and (markdown or latex):
            md, tex = plots.retrieval_tables(df, models, layer=options.get("layer"))
            for path, text in ((markdown, md), (latex, tex)):
                if path:
                    with atomic_path(path) as tmp:
                        Path(tmp).write_text(text, encoding="utf-8")
    elif figure == "rdm_heatmaps":
        files = [plots.read_rdms(p) for p in _as_list(rdms)]
        log.info("%s: %d RDM files", figure, len(files))
        fig = plots.rdm_heatmaps(files, models, **options)
    elif figure == "stimulus_montage":
        shapes_df = read_manifest(shapes) if shapes else None
        words_df = read_manifest(pseudowords) if pseudowords else None
        fig = plots.stimulus_montage(
            shapes_df, words_df,
            shapes_root=Path(shapes).parent if shapes else ".",
            pseudowords_root=Path(pseudowords).parent if pseudowords else ".",
            **options,
        )
    else:
        raise ValueError(f"unknown figure {figure!r}; known: {', '.join(FIGURES)}")
    try:
        style.save_as(fig, pdf, png)
    finally:
        style.plt.close(fig)
    log.info("%s: wrote %s and %s", figure, pdf, png)
