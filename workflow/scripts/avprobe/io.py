"""Reading and writing the pipeline's files: manifests, embeddings and tidy tables.

Every writer goes through :func:`atomic_path`, so a job killed mid-write never leaves
a file that looks complete.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

LABELS = ("sharp", "round")

#: Columns every tidy analysis table carries (one row per set × model × layer × metric).
TABLE_COLUMNS = (
    "analysis",
    "set",
    "model",
    "layer",
    "layer_index",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "p",
    "n",
)

EMBEDDINGS_META_KEY = b"avprobe"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Permissions of a finished file (mkstemp makes its temporary files private, 0600).
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary name is hidden (``.<name>.<random>.tmp``) in the same folder, so the rename is
    atomic and a writer killed mid-way (even by SIGKILL) leaves no file under ``path`` that
    looks complete; an exception removes the temporary file. The next writer of ``path``
    removes what a killed one left (one job writes a given output at a time).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class DamagedFileError(ValueError):
    """A Parquet file that exists but cannot be read (truncated, overwritten, corrupt)."""


def damaged(path: str | os.PathLike, err: BaseException) -> DamagedFileError:
    """The error for a damaged file: its path, what the reader said, and how to rebuild it."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return DamagedFileError(
        f"{path}: damaged or truncated file ({first}). Rebuild it: rm '{path}' && snakemake --cores 1 "
        f"'{path}' (then rerun the workflow, which redoes what depends on it)")


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Turn a Parquet reader's error on an existing file into :class:`DamagedFileError`."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as err:
        raise damaged(path, err) from None


def parquet_file(path: str | os.PathLike) -> pq.ParquetFile:
    with reading(path):
        return pq.ParquetFile(path)


def read_parquet(path: str | os.PathLike, columns=None) -> pd.DataFrame:
    """``pandas.read_parquet``, naming the file and the fix when it is damaged."""
    with reading(path):
        return pd.read_parquet(path, columns=columns)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame to Parquet atomically, without the pandas index."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a stimulus manifest and check the columns every manifest must have."""
    df = read_parquet(path)
    if "stimulus_id" not in df.columns:
        raise ValueError(f"{path}: a manifest needs a 'stimulus_id' column")
    if df["stimulus_id"].duplicated().any():
        dup = df.loc[df["stimulus_id"].duplicated(), "stimulus_id"].iloc[0]
        raise ValueError(f"{path}: stimulus_id {dup!r} appears more than once")
    if "label" in df.columns:
        bad = set(df["label"].dropna().unique()) - set(LABELS) - {"reference"}
        if bad:
            raise ValueError(f"{path}: labels must be 'sharp' or 'round', found {sorted(bad)}")
    return df


def resolve_stimulus_path(manifest_path: str | os.PathLike, relative: str) -> Path:
    """Manifest paths are relative to the manifest's folder, so a results tree can move."""
    return Path(manifest_path).parent / relative


def hash_config(obj: object) -> str:
    """A stable short hash of any JSON-serialisable object (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_embeddings(
    layers: list[tuple[str, int, tuple[list[str], np.ndarray]]],
    path: str | os.PathLike,
    metadata: Mapping[str, object],
    dtype: str = "float32",
) -> int:
    """Write one embeddings file: a row group per layer.

    ``layers`` holds ``(layer_name, layer_index, (stimulus_ids, matrix))``. Each layer is
    one row group, so a reader that wants one layer touches only that layer's bytes.
    ``embedding`` is a fixed-size list when every layer has the same width; a model whose
    projection (``joint``) is narrower than its hidden states gets variable-size lists,
    because one Parquet column has one type. ``dtype`` is the storage precision: ``float32``
    (default) or ``float16`` (half the bytes; :func:`read_layer` returns float32 either way).
    Returns the number of rows written.
    """
    np_dtype = np.dtype(dtype)
    if np_dtype not in (np.float32, np.float16):
        raise ValueError(f"{path}: embeddings are stored as float32 or float16, not {dtype!r}")
    arrow_float = pa.from_numpy_dtype(np_dtype)
    layers = list(layers)
    if not layers:
        raise ValueError(f"{path}: no layers to write")
    widths = set()
    for name, _, (ids, matrix) in layers:
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise ValueError(f"layer {name}: expected a ({len(ids)}, dim) matrix, got {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise ValueError(f"layer {name}: embeddings contain NaN or Inf")
        if np_dtype == np.float16 and matrix.size and np.abs(matrix).max() > np.finfo(np.float16).max:
            raise ValueError(f"layer {name}: values up to {np.abs(matrix).max():.4g} overflow float16 "
                             f"(max {np.finfo(np.float16).max:.0f}); store this model as float32")
        widths.add(matrix.shape[1])
    fixed = len(widths) == 1
    list_type = pa.list_(arrow_float, widths.pop()) if fixed else pa.list_(arrow_float)
    schema = pa.schema(
        [
            ("stimulus_id", pa.string()),
            ("layer", pa.string()),
            ("layer_index", pa.int32()),
            ("embedding", list_type),
        ],
        metadata={EMBEDDINGS_META_KEY: json.dumps(dict(metadata), default=str).encode()},
    )
    rows = 0
    with atomic_path(path) as tmp:
        # Dictionary-encoding float vectors only adds a page of distinct values (+5 % at 768
        # dimensions, +50 % at 128); ids and layer names do repeat.
        with pq.ParquetWriter(tmp, schema, use_dictionary=["stimulus_id", "layer"]) as writer:
            for name, index, (ids, matrix) in layers:
                matrix = np.ascontiguousarray(matrix, dtype=np_dtype)
                n, dim = matrix.shape
                values = pa.array(matrix.reshape(-1), type=arrow_float)
                if fixed:
                    emb = pa.FixedSizeListArray.from_arrays(values, dim)
                else:
                    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
                    emb = pa.ListArray.from_arrays(offsets, values)
                table = pa.table(
                    [
                        pa.array(list(ids), type=pa.string()),
                        pa.array([name] * n, type=pa.string()),
                        pa.array([index] * n, type=pa.int32()),
                        emb,
                    ],
                    schema=schema,
                )
                writer.write_table(table, row_group_size=max(n, 1))
                rows += n
    return rows


def embeddings_metadata(path: str | os.PathLike) -> dict:
    """The provenance dictionary stored in an embeddings file."""
    with reading(path):
        meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(EMBEDDINGS_META_KEY, b"{}"))


def embedding_layers(path: str | os.PathLike) -> list[tuple[str, int]]:
    """``(layer, layer_index)`` of every layer in a file, in order, read from the footer only."""
    pf = parquet_file(path)
    out = []
    for i in range(pf.num_row_groups):
        stats = pf.metadata.row_group(i).column(1).statistics
        idx_stats = pf.metadata.row_group(i).column(2).statistics
        out.append((stats.min, int(idx_stats.min)))
    return out


def read_layer(path: str | os.PathLike, layer: str) -> tuple[list[str], np.ndarray]:
    """Read one layer as ``(stimulus_ids, matrix)``, touching only that layer's row group."""
    pf = parquet_file(path)
    for i, (name, _) in enumerate(embedding_layers(path)):
        if name == layer:
            with reading(path):
                table = pf.read_row_group(i, columns=["stimulus_id", "embedding"])
            ids = table.column("stimulus_id").to_pylist()
            emb = table.column("embedding").combine_chunks()
            flat = emb.flatten().to_numpy(zero_copy_only=False)
            matrix = flat.reshape(len(ids), -1) if ids else flat.reshape(0, 0)
            return ids, matrix.astype(np.float32, copy=False)
    names = [n for n, _ in embedding_layers(path)]
    raise KeyError(f"{path}: no layer {layer!r}; layers are {names}")


def read_all_layers(path: str | os.PathLike) -> Iterator[tuple[str, int, list[str], np.ndarray]]:
    """Yield ``(layer, layer_index, stimulus_ids, matrix)`` for every layer, one at a time."""
    for name, index in embedding_layers(path):
        ids, matrix = read_layer(path, name)
        yield name, index, ids, matrix


def tidy_table(rows: list[dict]) -> pd.DataFrame:
    """Build a tidy analysis table with the standard columns first, in order."""
    df = pd.DataFrame(rows)
    for col in TABLE_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    extra = [c for c in df.columns if c not in TABLE_COLUMNS]
    return df[list(TABLE_COLUMNS) + extra]
