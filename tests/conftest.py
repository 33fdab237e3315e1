import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One full run of the tiny study in a scratch copy of the workflow (shared by the session:
    tests that change it work on copies, or undo what they change)."""
    from workflow_cli import copy_workflow, run_snakemake

    work = copy_workflow(tmp_path_factory.mktemp("tiny"))
    shutil.copy2(ROOT / "tests" / "data" / "tiny_config.yaml", work / "tiny_config.yaml")
    run_snakemake("--cores", "2", "--configfile", "tiny_config.yaml", cwd=work)
    return work
