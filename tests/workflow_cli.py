"""Running the real snakemake CLI from tests: a scratch copy of the workflow, offline."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow", "config", "config.yaml", "envs", "profiles", "resources")


@functools.lru_cache(maxsize=None)
def clean_workflow() -> Path:
    """A scratch copy of the workflow with no results, no logs and no .snakemake, made once per
    test process: tests never depend on (or lock) what the user's own runs left in the checkout."""
    return copy_workflow(Path(tempfile.mkdtemp(prefix="avprobe-clean-")) / "workflow")


def run_snakemake(
    *args: str, cwd: Path | None = None, check: bool = True, timeout: int = 1500
) -> subprocess.CompletedProcess:
    """Run snakemake with no hub access (in :func:`clean_workflow` unless ``cwd`` is given); on
    failure show its output in the assertion."""
    cwd = clean_workflow() if cwd is None else cwd
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def copy_workflow(dest: Path, config_text: str | None = None) -> Path:
    """Copy the workflow's files into ``dest``; ``config_text`` replaces its config.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / part)
    if config_text is not None:
        (dest / "config.yaml").write_text(config_text)
    return dest
