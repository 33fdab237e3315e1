"""The provenance table of a run: every output file's sha256, the config hash, package versions.

``results/provenance.parquet`` has one row per record, columns :data:`COLUMNS`:

* ``category`` ``stimuli | embeddings | rejected | models | tables | figures | other``: one
  row per output file (``path`` relative to the working directory, ``bytes``, ``sha256``,
  ``n_rows`` for Parquet files, ``n_rejected`` = stimuli quarantined by the extraction of an
  embeddings file, and for a rejected table its own row count). The files are the rule's
  inputs (every declared output of the run) plus every file under ``results/stimuli`` and
  ``results/models`` (stimulus folders, intermediate sets, built models); hidden files
  (leftover ``.name.*.tmp`` of a killed writer) are not listed.
* ``config``: ``path = "config"``, ``sha256`` = the hash of the whole validated config.
* ``package``: ``path`` = the package, ``version``, ``source`` = ``job`` (the provenance job's
  environment), ``workflow`` (the process running Snakemake) or ``extraction`` (recorded in
  the embeddings files by the extraction jobs, which may run in another environment).

Every row carries ``config_hash``. The Parquet schema metadata (key ``avprobe``) holds the
config itself as JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import io

log = logging.getLogger("avprobe")

COLUMNS = ("category", "path", "bytes", "sha256", "n_rows", "n_rejected", "version", "source", "config_hash")

#: Distributions whose versions decide the numbers (those installed are listed).
PACKAGES = (
    "torch", "transformers", "tokenizers", "huggingface-hub", "safetensors", "numpy", "scipy",
    "pandas", "pyarrow", "scikit-learn", "rsatoolbox", "threadpoolctl", "soundfile", "soxr",
    "pillow", "matplotlib", "snakemake", "espeakng-loader", "piper-tts", "onnxruntime", "pyyaml",
)


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """``{distribution: version or None}`` of this Python environment, plus ``python``."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def category(path: str) -> str:
    parts = Path(path).parts
    if "embeddings" in parts:
        return "rejected" if "rejected" in parts else "embeddings"
    for key in ("stimuli", "models", "tables", "figures"):
        if key in parts:
            return key
    return "other"


def _walk(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


#: Folders of ``results/`` listed file by file: the stimulus sets (clips, images, manifests, QC
#: tables; intermediate sets such as pseudoword_text too) and the built models.
WALKED = ("stimuli", "models")


def collect_files(inputs: Iterable[str | os.PathLike], results: str | os.PathLike | None = None) -> list[Path]:
    """The input files (folders expanded) and every file under ``<results>/stimuli`` and
    ``<results>/models``; sorted, unique. ``results`` defaults to the ``results`` folder of the
    first input under one."""
    inputs = [Path(p) for p in inputs]
    if results is None:
        for p in inputs:
            if "results" in p.parts:
                results = Path(*p.parts[: p.parts.index("results") + 1])
                break
    files: set[Path] = set()
    for p in inputs:
        files.update(_walk(p) if p.is_dir() else [p])
    if results is not None:
        for sub in WALKED:
            if (Path(results) / sub).is_dir():
                files.update(_walk(Path(results) / sub))
    return sorted(files, key=lambda f: f.as_posix())


def _n_rows(path: Path) -> int | None:
    if path.suffix != ".parquet":
        return None
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:
        return None


def provenance_table(
    inputs: Iterable[str | os.PathLike],
    *,
    config_hash: str,
    workflow_versions: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Build the table described in the module docstring."""
    rows: list[dict] = []
    extraction_versions: dict[tuple[str, str], None] = {}
    n_rejected_total = 0
    for f in collect_files(inputs):
        rel = f.as_posix()
        cat = category(rel)
        row = dict(category=cat, path=rel, bytes=f.stat().st_size, sha256=sha256_file(f), n_rows=_n_rows(f))
        if cat == "rejected":
            row["n_rejected"] = row["n_rows"]
            n_rejected_total += int(row["n_rows"] or 0)
        elif cat == "embeddings" and f.suffix == ".parquet":
            rej = f.parent / "rejected" / f.name
            row["n_rejected"] = _n_rows(rej) if rej.is_file() else None
            versions = io.embeddings_metadata(f).get("versions") or {}
            for pkg, ver in versions.items():
                extraction_versions[(str(pkg), str(ver))] = None
        rows.append(row)
    rows.append(dict(category="config", path="config", sha256=config_hash))
    for source, versions in (("job", package_versions()), ("workflow", dict(workflow_versions or {}))):
        for pkg, ver in versions.items():
            rows.append(dict(category="package", path=pkg, version=ver, source=source))
    for pkg, ver in extraction_versions:
        rows.append(dict(category="package", path=pkg, version=ver, source="extraction"))
    table = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in table.columns:
            table[col] = None
    table["config_hash"] = config_hash
    table = table[list(COLUMNS)]
    table["bytes"] = table["bytes"].astype("Int64")
    table["n_rows"] = table["n_rows"].astype("Int64")
    table["n_rejected"] = table["n_rejected"].astype("Int64")
    for col in ("category", "path", "sha256", "version", "source", "config_hash"):
        table[col] = table[col].astype("string")
    n_files = int(table["category"].isin(["stimuli", "embeddings", "rejected", "models", "tables", "figures", "other"]).sum())
    log.info("provenance: %d files hashed, config %s, %d stimuli quarantined in all", n_files, config_hash,
             n_rejected_total)
    return table


def write_provenance(
    inputs: Iterable[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    config: Mapping | None = None,
    config_hash: str,
    workflow_versions: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Write ``results/provenance.parquet`` atomically; return the table."""
    table = provenance_table(inputs, config_hash=config_hash, workflow_versions=workflow_versions)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[io.EMBEDDINGS_META_KEY] = json.dumps({"config_hash": config_hash, "config": config},
                                              sort_keys=True, default=str).encode()
    arrow = arrow.replace_schema_metadata(meta)
    with io.atomic_path(out_path) as tmp:
        pq.write_table(arrow, tmp)
    return table
