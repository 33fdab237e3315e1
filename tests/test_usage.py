"""The three ways the pipeline is used, as the README documents them.

- submission through the SLURM profile: every planned job carries the resources the profile and
  the model config intend, under the README's own command;
- cached results moved to another clone: one figure regenerates there and nothing else runs;
- the report: every caption renders without a docutils warning, and a report under a config
  whose outputs are missing says so.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from avprobe import plan
from workflow_cli import ROOT, SNAKEMAKE, run_snakemake

README = (ROOT / "README.md").read_text()
SLURM_ENV = {"AVPROBE_SLURM_PARTITION": "compute", "AVPROBE_SLURM_ACCOUNT": "lab42"}
#: Rules whose jobs take gpu, mem_mb and runtime from the model's config entry.
MODEL_RULES = {"extract_embeddings", "extract_embedding_shard", "transcribe", "dense_maps"}


# ---------------------------------------------------------------- the SLURM profile


def planned_jobs(dry_run_stdout: str) -> list[dict]:
    """Every job of a dry run: rule, wildcards and resources (as printed, strings)."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n)", dry_run_stdout):
        rule = re.search(r"^\s*(?:local)?rule (\w+):\s*$", block, re.M)
        if not rule or rule.group(1) == "all":
            continue
        fields = {}
        for key in ("wildcards", "resources"):
            line = re.search(rf"^\s*{key}: (.*)$", block, re.M)
            fields[key] = dict(item.split("=", 1) for item in line.group(1).split(", ")) if line else {}
        jobs.append({"rule": rule.group(1), **fields})
    return jobs


def readme_slurm_command() -> list[str]:
    """The README's submission command (Running on a cluster), as argv after `snakemake`."""
    section = README.split("## Running on a cluster", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = [line.split() for line in block.splitlines() if line.strip().startswith("snakemake --")]
    assert len(commands) == 1, block
    return commands[0][1:]


def paper_config() -> dict:
    """config/paper.yaml merged over config.yaml, schema defaults filled."""
    from snakemake.utils import update_config, validate

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    validate(config, str(ROOT / "config" / "schema.yaml"))
    return config


@pytest.fixture
def slurm_plugin(monkeypatch):
    pytest.importorskip(
        "snakemake_executor_plugin_slurm", reason="pip install -r requirements.txt installs the SLURM executor"
    )
    for name, value in SLURM_ENV.items():
        monkeypatch.setenv(name, value)


def test_every_job_of_the_documented_slurm_command_carries_its_resources(slurm_plugin):
    argv = readme_slurm_command()
    assert "--workflow-profile" in argv and "profiles/slurm" in argv
    assert "--default-resources" not in argv  # it would replace the profile's whole block
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "profile.yaml").read_text())
    defaults = profile["default-resources"]
    config = paper_config()
    models = config["models"]

    jobs = planned_jobs(run_snakemake("-n", *argv).stdout)
    rules = {job["rule"] for job in jobs}
    assert {"extract_embeddings", "build_untrained_model", "symbolism", "rsa", "summary"} <= rules
    assert any(r.startswith("figure_") for r in rules)
    for job in jobs:
        res, where = job["resources"], f"{job['rule']} {job['wildcards']}"
        for name in ("mem_mb", "runtime", "cpus_per_task", "slurm_partition", "slurm_account"):
            assert name in res and res[name] not in ("", "<TBD>", "None"), f"{where}: no {name} in {res}"
        assert res["slurm_partition"] == "compute" and res["slurm_account"] == "lab42", where
        assert int(res["cpus_per_task"]) >= 1, where
        if job["rule"] in MODEL_RULES:
            spec = models[job["wildcards"].get("model") or plan.asr_model(config)]
            assert int(res["mem_mb"]) == spec["mem_mb"], where
            assert int(res["runtime"]) == spec["runtime"], where
            assert int(res.get("gpu", 0)) == plan.gpus_for(spec), where
        else:
            assert int(res["mem_mb"]) == defaults["mem_mb"], where
            assert int(res["runtime"]) == defaults["runtime"], where
    # pretrained extractions ask for a GPU, the controls and baselines none
    gpu = {job["wildcards"]["model"]: int(job["resources"]["gpu"]) for job in jobs if job["rule"] == "extract_embeddings"}
    assert gpu["hubert-base"] == 1 and gpu["hubert-untrained"] == 0 and gpu["logmel"] == 0


def test_the_slurm_profile_keeps_its_resources_when_loaded_as_a_global_profile(slurm_plugin):
    """`--profile profiles/slurm` also loads profiles/default, which must not replace them."""
    jobs = planned_jobs(run_snakemake("-n", "--profile", "profiles/slurm").stdout)
    assert jobs
    for job in jobs:
        for name in ("mem_mb", "runtime", "cpus_per_task", "slurm_partition", "slurm_account"):
            assert name in job["resources"], f"{job['rule']}: no {name}"


def test_a_slurm_run_that_lost_the_profiles_resources_refuses_to_start(slurm_plugin, monkeypatch):
    # the old README command: --default-resources on the command line replaces the whole block
    proc = run_snakemake(
        "-n", "--profile", "profiles/slurm", "--default-resources", "slurm_partition=p", "slurm_account=a",
        check=False,
    )
    assert proc.returncode != 0
    assert "lack runtime, cpus_per_task" in proc.stdout + proc.stderr
    monkeypatch.delenv("AVPROBE_SLURM_PARTITION")
    proc = run_snakemake("-n", "--workflow-profile", "profiles/slurm", check=False)
    assert proc.returncode != 0
    assert "export AVPROBE_SLURM_PARTITION" in proc.stdout + proc.stderr
