"""Running the real snakemake CLI from tests: a scratch copy of the workflow, offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow", "config", "config.yaml", "envs", "profiles", "resources")


def run_snakemake(
    *args: str, cwd: Path = ROOT, check: bool = True, timeout: int = 1500
) -> subprocess.CompletedProcess:
    """Run snakemake with no hub access; on failure show its output in the assertion."""
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
