"""Write the conda envs' pins from requirements.txt, the one pinned set CI installs.

Each ``envs/<name>.yaml`` keeps its own comment and its list of packages; this script rewrites
the versions from ``requirements.txt``. The conda part holds only what is certain on
conda-forge (``python`` and ``pip``); every other package sits under the env's ``pip:`` section
with the exact pin of ``requirements.txt``, so ``--use-conda`` installs the same wheels as
``pip install -r requirements.txt`` (tests/test_usage.py checks that the files are in sync).

    python envs/sync.py           # rewrite envs/*.yaml
    python envs/sync.py --check   # exit 1 and name the files that are out of sync
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "3.11"
#: conda-forge names of packages whose pip distribution is named differently
CONDA_TO_PIP = {"pytorch": "torch", "pysoundfile": "soundfile", "matplotlib-base": "matplotlib"}


def normal(name: str) -> str:
    return name.lower().replace("_", "-")


def requirement_pins(path: Path = ROOT / "requirements.txt") -> dict[str, str]:
    """Normalised name → the requirement line (``name==version``), in file order."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normal(name)] = f"{name}=={version}"
    return pins


def env_packages(env: dict) -> set[str]:
    """The packages an env file names (normalised pip names), python and pip left out."""
    names = set()
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict):
            names.update(normal(d.split("==")[0].split(">")[0].split("<")[0]) for d in dep.get("pip", []))
        else:
            name = dep.split("=")[0].strip()
            if name not in ("python", "pip"):
                names.add(normal(CONDA_TO_PIP.get(name, name)))
    return names


def render(path: Path, pins: dict[str, str] | None = None) -> str:
    """The env file as it should read: its comment, conda-forge, python + pip, pinned pip deps."""
    pins = requirement_pins() if pins is None else pins
    text = path.read_text()
    packages = env_packages(yaml.safe_load(text))
    unknown = sorted(packages - set(pins))
    if unknown:
        raise SystemExit(f"{path.name}: {', '.join(unknown)} not pinned in requirements.txt")
    generated = [
        "# Generated pins: python envs/sync.py (from requirements.txt). Only python and pip come",
        "# from conda; the rest are pip's wheels, the same CI installs.",
    ]
    comment = [line for line in text.splitlines() if line.startswith("#") and line not in generated]
    lines = comment + generated + [
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        f"  - python={PYTHON}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {line}" for name, line in pins.items() if name in packages]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for path in sorted((ROOT / "envs").glob("*.yaml")):
        want = render(path)
        if path.read_text() != want:
            stale.append(path.name)
            if "--check" not in argv:
                path.write_text(want)
    if stale and "--check" in argv:
        print("out of sync with requirements.txt (run python envs/sync.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
