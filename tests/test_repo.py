"""The repository keeps its promises: README commands, CI, pinned envs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = ".venv/bin/python -m pytest -q tests"

# conda-forge names that differ from the pip distribution names in requirements.txt
CONDA_TO_PIP = {"pytorch": "torch", "pysoundfile": "soundfile", "matplotlib-base": "matplotlib"}


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def env_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                name, version = pip_dep.split("==")
                pins[name.lower().replace("_", "-")] = version
        elif dep not in ("pip",):
            name, _, version = dep.partition("=")
            assert version, f"{path.name}: {dep} is not pinned"
            name = CONDA_TO_PIP.get(name, name)
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in readme
    assert ci.strip().splitlines()[-1] == TEST_COMMAND


def test_readme_quick_start_installs_from_requirements_and_runs_the_pipeline():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```(?:bash)?\n(.*?)```", readme, re.S).group(1)
    commands = [c for c in block.splitlines() if c.strip() and not c.startswith("#")]
    assert len(commands) == 2, commands
    assert "pip install -r requirements.txt" in commands[0] and "snakemake" in commands[0]
    assert commands[1].strip() == TEST_COMMAND


def test_every_env_is_pinned_and_agrees_with_requirements():
    pins = requirement_pins()
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert {p.stem for p in envs} >= {"stimuli", "models", "analysis", "plots"}
    for path in envs:
        for name, version in env_pins(path).items():
            if name == "python":
                continue
            assert name in pins, f"{path.name}: {name} is not in requirements.txt"
            assert pins[name].split("+")[0] == version, f"{path.name}: {name}={version} vs {pins[name]}"


def test_every_rule_that_runs_code_has_log_conda_and_script():
    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        for block in re.split(r"\n(?=\s*rule\b)", text):
            if not re.match(r"\s*rule\b", block):
                continue
            if "script:" in block or "shell:" in block:
                for directive in ("log:", "conda:"):
                    assert directive in block, f"{smk.name}: a rule lacks {directive}\n{block[:200]}"
            assert "run:" not in block, f"{smk.name}: use script:, conda does not apply to run:"


def test_lab_repository_files_exist_and_agree_on_the_version():
    import yaml

    from avprobe import __version__

    for name in ("LICENSE", "CITATION.cff", "CHANGELOG.md"):
        assert (ROOT / name).is_file(), name
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == __version__
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()
    titles = " ".join(r["title"] for r in citation["references"])
    for seed in ("Measuring Sound Symbolism", "Kiki or Bouba", "Principled probing", "BrewCLIP"):
        assert seed in titles
