"""Figure ``rsa_partial``: layerwise RSA after regressing out a covariate RDM (e.g. log-mel)."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from .common import read_tables
from .rsa_layers import rsa_layers
from .style import plt


def rsa_partial(df: pd.DataFrame, models: Mapping | None = None,
                references: list[str] | None = None, sets: list[str] | None = None,
                layer_axis: str = "name") -> plt.Figure:
    """Partial RSA (rows with ``partial`` true), drawn like :func:`rsa_layers.rsa_layers`,
    naming the covariate regressed out and the one-sided test."""
    return rsa_layers(df, models, partial=True, references=references, sets=sets,
                      layer_axis=layer_axis)


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    return rsa_partial(read_tables(inputs.get("tables")), models, **options)
