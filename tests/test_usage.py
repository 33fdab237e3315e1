"""The three ways the pipeline is used, as the README documents them.

- submission through the SLURM profile: every planned job carries the resources the profile and
  the model config intend, under the README's own command;
- cached results moved to another clone: one figure regenerates there and nothing else runs;
- the report: every caption renders without a docutils warning, and a report under a config
  whose outputs are missing says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from avprobe import plan
from workflow_cli import ROOT, run_snakemake

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
        threads = re.search(r"^\s*threads: (\d+)$", block, re.M)
        jobs.append({"rule": rule.group(1), "threads": threads.group(1) if threads else "1", **fields})
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
    """`--profile profiles/slurm` also loads profiles/default, which must not replace them; and
    each job asks for one CPU per thread (--cores: a dry run otherwise shows one thread)."""
    out = run_snakemake("-n", "--profile", "profiles/slurm", "--cores", "64").stdout
    jobs = planned_jobs(out)
    assert jobs
    for job in jobs:
        for name in ("mem_mb", "runtime", "cpus_per_task", "slurm_partition", "slurm_account"):
            assert name in job["resources"], f"{job['rule']}: no {name}"
    threaded = {job["rule"]: int(job["threads"]) for job in jobs if int(job["threads"]) > 1}
    assert threaded, "some rules of the default study use two threads"
    for job in jobs:
        assert int(job["resources"]["cpus_per_task"]) == int(job["threads"]), job


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


# ---------------------------------------------------------------- the report


def render_caption(path: Path) -> tuple[str, str]:
    """A caption rendered as Snakemake's report does (Jinja, then docutils): (html, warnings)."""
    import io

    import jinja2
    from docutils.core import publish_parts
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(config, str(ROOT / "config" / "schema.yaml"))
    text = jinja2.Environment(undefined=jinja2.ChainableUndefined).from_string(path.read_text()).render(
        snakemake=type("Snakemake", (), {"config": config})()
    )
    stream = io.StringIO()
    html = publish_parts(text, writer="html", settings_overrides={"warning_stream": stream, "report_level": 1})
    return html["body"], stream.getvalue()


CAPTIONS = sorted((ROOT / "workflow" / "report").glob("*.rst"))


@pytest.mark.parametrize("caption", CAPTIONS, ids=lambda p: p.stem)
def test_every_report_caption_renders_without_docutils_warnings(caption):
    html, warnings = render_caption(caption)
    assert not warnings, f"{caption.name}:\n{warnings}"
    assert "problematic" not in html and "system-message" not in html


def test_the_report_of_the_tiny_run_builds_without_docutils_warnings(tiny_run, tmp_path):
    report = tmp_path / "report.html"
    proc = run_snakemake("--configfile", "tiny_config.yaml", "--report", str(report), cwd=tiny_run)
    out = proc.stdout + proc.stderr
    for level in ("(INFO/1)", "(WARNING/2)", "(ERROR/3)", "(SEVERE/4)"):
        assert level not in out, out[-4000:]
    html = report.read_text(errors="replace")
    assert "system-message" not in html and "problematic" not in html
    assert "symbolism_auc" in html


def test_a_report_under_a_config_whose_outputs_are_missing_refuses_naming_them(tiny_run, tmp_path):
    report = tmp_path / "paper.html"
    proc = run_snakemake("--report", str(report), "--configfile", "config/paper.yaml", cwd=tiny_run, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "final outputs of this config are missing" in out
    assert "results/embeddings/" in out and "hubert-base.parquet" in out
    assert not report.exists()


# ---------------------------------------------------------------- cached results in a clone

FIGURE = "rsa_layers"


def git_clone(dest: Path) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, capture_output=True)
    shutil.copy2(ROOT / "tests" / "data" / "tiny_config.yaml", dest / "tiny_config.yaml")
    return dest


def copy_like_cp_r(src: Path, dest: Path) -> None:
    """`cp -r`: contents copied, every file stamped with the time of its copy."""
    shutil.copytree(src, dest, copy_function=shutil.copyfile, dirs_exist_ok=True)


def job_stats(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in stdout else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def planned(cwd: Path, *args: str) -> dict[str, int]:
    out = run_snakemake("-n", *args, "--configfile", "tiny_config.yaml", cwd=cwd).stdout
    return {} if "Nothing to be done" in out else job_stats(out)


def test_everything_copied_into_a_fresh_clone_then_touched_regenerates_one_figure_alone(tiny_run, tmp_path):
    clone = git_clone(tmp_path / "clone")
    copy_like_cp_r(tiny_run / "results", clone / "results")
    assert planned(clone), "a fresh clone with copied results should not look up to date yet"

    # the README's step: record the copied outputs as up to date
    for command in ("snakemake --touch --cores 1", f"snakemake results/figures/{FIGURE}.pdf --cores 1"):
        assert command in README
    run_snakemake("--touch", "--cores", "1", "--configfile", "tiny_config.yaml", cwd=clone)
    assert planned(clone) == {}

    # editing the figure's module reruns that figure and rsa_partial, which imports it (README)
    module = clone / "workflow/scripts/avprobe/figures" / f"{FIGURE}.py"
    module.write_text(module.read_text() + "\n# edited in the clone\n")
    assert set(planned(clone)) == {"figure_rsa_layers", "figure_rsa_partial", "provenance", "all"}
    assert "`rsa_partial` imports" in README

    pdf = clone / "results/figures" / f"{FIGURE}.pdf"
    before = pdf.stat().st_mtime_ns
    out = run_snakemake(f"results/figures/{FIGURE}.pdf", "--cores", "1", "--configfile", "tiny_config.yaml", cwd=clone)
    assert job_stats(out.stdout + out.stderr) == {f"figure_{FIGURE}": 1}
    assert pdf.stat().st_mtime_ns > before and pdf.read_bytes().startswith(b"%PDF")
    assert planned(clone, f"results/figures/{FIGURE}.pdf") == {}


def test_only_tables_copied_into_a_fresh_clone_regenerate_one_figure_alone(tiny_run, tmp_path):
    clone = git_clone(tmp_path / "clone")
    copy_like_cp_r(tiny_run / "results/tables", clone / "results/tables")
    command = f"snakemake results/figures/{FIGURE}.pdf --allowed-rules figure_{FIGURE} --cores 1"
    assert command in README

    # --touch would record the missing embeddings as done: it refuses, naming them
    proc = run_snakemake("--touch", "--cores", "1", "--configfile", "tiny_config.yaml", cwd=clone, check=False)
    assert proc.returncode != 0 and "results/embeddings/" in proc.stdout + proc.stderr

    args = (f"results/figures/{FIGURE}.pdf", "--allowed-rules", f"figure_{FIGURE}")
    assert planned(clone, *args) == {f"figure_{FIGURE}": 1}
    out = run_snakemake(*args, "--cores", "1", "--configfile", "tiny_config.yaml", cwd=clone)
    assert job_stats(out.stdout + out.stderr) == {f"figure_{FIGURE}": 1}
    assert (clone / "results/figures" / f"{FIGURE}.pdf").read_bytes().startswith(b"%PDF")
    assert not (clone / "results/embeddings").exists()


def test_readme_figure_statement_matches_the_declared_figure_inputs():
    """Editing a figure's module reruns the figures whose inputs list it: itself, and for
    rsa_layers also rsa_partial (the README says so)."""
    from avprobe.figures.deps import FIGURES, input_paths

    for figure in FIGURES:
        module = f"/figures/{figure}.py"
        rerun = {g for g in FIGURES if any(p.endswith(module) for p in input_paths(g))}
        expected = {figure, "rsa_partial"} if figure == "rsa_layers" else {figure}
        assert rerun == expected, (figure, rerun)


# ---------------------------------------------------------------- untrained controls' folders


@pytest.fixture
def tiny_copy(tiny_run, tmp_path):
    """A copy of the finished tiny run (mtimes and Snakemake's records kept)."""
    dest = tmp_path / "tiny"
    shutil.copytree(tiny_run, dest, symlinks=True)
    return dest


def test_an_untrained_control_folder_is_the_rule_output_and_a_missing_file_rebuilds_it(tiny_copy):
    folder = tiny_copy / "results/models/hubert-untrained"
    out = run_snakemake("-n", "--delete-all-output", "--configfile", "tiny_config.yaml", cwd=tiny_copy).stdout
    assert "Would delete results/models/hubert-untrained\n" in out + "\n"
    assert planned(tiny_copy, "results/models/hubert-untrained") == {}

    weights = folder / "model.safetensors"
    original = weights.read_bytes()
    weights.unlink()
    stats = planned(tiny_copy)
    assert stats.get("build_untrained_model") == 1 and stats.get("flag_model_rebuild") == 1, stats
    assert "prefetch_models" not in stats

    # loading the broken folder names the right fix
    from avprobe.models import load_model
    from avprobe.models.base import ModelUnavailableError

    spec = {"family": "hf_audio", "kind": "untrained", "source": "resources/model_configs/hubert-tiny",
            "towers": ["audio"]}
    with pytest.raises((ModelUnavailableError, OSError)) as err:
        load_model("hubert-untrained", spec, model_dir=str(folder), device="cpu")
    assert "build_untrained_model" in str(err.value) and "prefetch_models" not in str(err.value)

    # rebuilding the folder alone gives the same bytes, and then nothing is left to do for it
    run_snakemake("results/models/hubert-untrained", "--cores", "1", "--configfile", "tiny_config.yaml", cwd=tiny_copy)
    assert weights.read_bytes() == original
    assert planned(tiny_copy, "results/models/hubert-untrained") == {}


# ---------------------------------------------------------------- the conda envs


def test_the_conda_envs_are_written_from_requirements():
    sync = subprocess.run([sys.executable, str(ROOT / "envs" / "sync.py"), "--check"],
                          capture_output=True, text=True)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    for path in sorted((ROOT / "envs").glob("*.yaml")):
        env = yaml.safe_load(path.read_text())
        conda = [d for d in env["dependencies"] if not isinstance(d, dict)]
        assert conda == ["python=3.11", "pip"], f"{path.name}: only python and pip come from conda"
