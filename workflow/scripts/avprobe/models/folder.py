"""The folder of a built untrained control: the whole folder is the build rule's output.

After a build, :func:`record_files` lists every file of the folder with its size in
``avprobe_files.json``. :func:`broken_files` compares a folder with that record, so the
workflow notices a deleted or truncated weights or tokenizer file before any job runs and
rebuilds the folder (rules/common.smk), and extraction names the right fix when it cannot load
a folder (:func:`rebuild_hint`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FILES_RECORD = "avprobe_files.json"


def record_files(folder: str | os.PathLike) -> dict[str, int]:
    """Write ``avprobe_files.json`` (name → size in bytes of every other file); return it."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != FILES_RECORD and not p.name.startswith(".")
    }
    from ..io import atomic_path

    with atomic_path(folder / FILES_RECORD) as tmp:
        tmp.write_text(json.dumps(files, indent=2, sort_keys=True) + "\n")
    return files


def broken_files(folder: str | os.PathLike) -> list[str]:
    """Files of a built folder that are missing or changed in size ([] when it is whole).

    A folder that does not exist is not broken (the workflow simply builds it); a folder with
    no record is broken unless it has a config.json and weights (an older build).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    record = folder / FILES_RECORD
    if not record.is_file():  # built before the record existed: config.json and weights at least
        broken = [] if (folder / "config.json").is_file() else ["config.json"]
        if not list(folder.glob("*.safetensors")) + list(folder.glob("*.bin")):
            broken.append("weights (*.safetensors)")
        return broken
    try:
        files = json.loads(record.read_text())
    except ValueError:
        return [FILES_RECORD]
    broken = []
    for name, size in sorted(files.items()):
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            broken.append(name)
    return broken


def rebuild_hint(folder: str | os.PathLike) -> str | None:
    """The fix for a built control's folder that cannot be loaded, or None for other folders."""
    folder = Path(folder)
    if not (folder / FILES_RECORD).is_file() and not (folder / "avprobe_build.json").is_file():
        return None
    broken = broken_files(folder)
    what = f"missing or changed: {', '.join(broken)}" if broken else "it does not load"
    return (
        f"the built untrained model in {folder} is incomplete ({what}). Fix: rebuild it with the "
        f"build_untrained_model rule: run snakemake again (it notices a missing or changed file "
        f"and rebuilds the folder), or force it: snakemake --forcerun {folder}"
    )


def rebuild_state(folder: str | os.PathLike, flag: str | os.PathLike) -> str:
    """What the rebuild flag of a built folder should hold ("" when there is no flag to keep).

    A broken folder: its broken files and the folder's mtime, so each new breakage differs and
    reruns the flag's rule (and thus the build). A whole folder with a flag: the flag's content,
    so the flag's rule sees its params unchanged and nothing reruns.
    """
    folder, flag = Path(folder), Path(flag)
    broken = broken_files(folder)
    if broken:
        return f"rebuild {folder.name}: missing or changed {', '.join(broken)} (folder mtime {folder.stat().st_mtime_ns})"
    if flag.is_file():
        return flag.read_text().strip()
    return ""
