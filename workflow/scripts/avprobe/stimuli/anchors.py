"""Text anchors for sound symbolism: adjective prompts that name round or sharp shapes.

Alper & Averbuch-Elor (*Kiki or Bouba?*, NeurIPS 2023) score pseudowords against adjective
prompts rather than images. For a model whose space joins audio and text but not images
(CLAP), the ``shape_adjectives`` set plays the part of the shapes: each spoken pseudoword is
scored against the round prompts minus the sharp prompts, and the phonetic direction scores each
prompt against the round and sharp pseudowords.

Config ``stimuli.shape_adjectives``: ``round`` and ``sharp`` (lists of adjectives) and
``template`` (with ``{adjective}``). Manifest columns: ``stimulus_id`` (``<label>-<adjective>``),
``text`` (the filled template), ``adjective``, ``label`` (``round`` / ``sharp``).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import pandas as pd

from ..io import write_parquet

log = logging.getLogger("avprobe")


def adjective_manifest(cfg: Mapping) -> pd.DataFrame:
    """One row per adjective (round first, then sharp), in config order.

    Raises ValueError when a class is empty, an adjective is listed twice, or the template lacks
    ``{adjective}``.
    """
    template = cfg.get("template", "a {adjective} shape")
    if "{adjective}" not in template:
        raise ValueError(f"stimuli.shape_adjectives.template {template!r} must contain {{adjective}}")
    rows = []
    for label in ("round", "sharp"):
        words = list(cfg.get(label) or [])
        if not words:
            raise ValueError(f"stimuli.shape_adjectives.{label}: give at least one adjective")
        rows += [{"stimulus_id": f"{label}-{w}", "text": template.format(adjective=w), "adjective": w,
                  "label": label} for w in words]
    df = pd.DataFrame(rows)
    dup = df.loc[df["adjective"].duplicated(), "adjective"].tolist()
    if dup:
        raise ValueError(f"stimuli.shape_adjectives: adjectives listed twice: {dup}")
    return df


def make_shape_adjectives(cfg: Mapping, out_manifest: str | os.PathLike) -> pd.DataFrame:
    df = adjective_manifest(cfg)
    write_parquet(df, out_manifest)
    log.info("shape_adjectives: %s → %s", df["label"].value_counts().to_dict(), out_manifest)
    return df
