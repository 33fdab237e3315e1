"""What every stimulus manifest writer shares."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def with_manifest_paths(rows: pd.DataFrame, out_dir: str | os.PathLike, manifest: str | os.PathLike) -> pd.DataFrame:
    """Replace the ``file`` column (names inside ``out_dir``) by ``path``, relative to the
    manifest's folder as the contracts require, placed right after ``stimulus_id``."""
    manifest_dir = Path(manifest).parent
    paths = [Path(os.path.relpath(Path(out_dir) / f, manifest_dir)).as_posix() for f in rows["file"]]
    rows = rows.drop(columns="file")
    rows.insert(1, "path", paths)
    return rows
