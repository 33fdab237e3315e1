"""`--use-conda` must not miss a package: each rule's env covers everything its script imports.

Conda is not reachable on CI, so this static check stands in for building the envs: it follows
each rule's script through the avprobe modules it imports (lazy imports inside functions
included, since they run) and maps every third-party import to a package of the rule's env.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from test_repo import env_pins

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"

IMPORT_TO_PACKAGE = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "espeakng_loader": "espeakng-loader",
    "huggingface_hub": "huggingface-hub",
    "snakemake": "snakemake",
    "piper": "piper-tts",
}


def rule_envs() -> list[tuple[str, Path, Path]]:
    """(rule, env file, script) for every rule with conda: and script:."""
    found = []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=(?:\s*)rule\b)", text):
            name = re.match(r"\s*rule\s*(\w*)", block)
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
            if name and env and script:
                found.append(
                    (
                        f"{smk.stem}:{name.group(1) or 'loop'}",
                        (smk.parent / env.group(1)).resolve(),
                        (smk.parent / script.group(1)).resolve(),
                    )
                )
    return found


def module_file(module: str) -> Path | None:
    parts = module.split(".")
    base = SCRIPTS.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(path: Path, package: str) -> set[str]:
    """Every module a file imports; ``package`` is the package that contains the file."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                names.add(mod)
                for alias in node.names:
                    names.add(f"{mod}.{alias.name}")
            else:
                names.add(node.module)
                for alias in node.names:
                    names.add(f"{node.module}.{alias.name}")
    return names


def third_party_imports(script: Path) -> set[str]:
    seen: set[Path] = set()
    todo = [(script, "avprobe")]
    third = set()
    while todo:
        path, package = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports_of(path, package):
            top = name.split(".")[0]
            if top == "avprobe":
                target = module_file(name)
                if target is not None:
                    pkg = name if target.name == "__init__.py" else name.rpartition(".")[0]
                    todo.append((target, pkg))
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return third


@pytest.mark.parametrize("rule, env, script", rule_envs(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_rule_env_covers_script_imports(rule, env, script):
    assert env.exists(), f"{rule}: {env} missing"
    assert script.exists(), f"{rule}: {script} missing"
    packages = set(env_pins(env))
    for name in third_party_imports(script):
        package = IMPORT_TO_PACKAGE.get(name, name).lower().replace("_", "-")
        assert package in packages, f"{rule}: {script.name} imports {name} but {env.name} lacks {package}"


def test_every_rule_with_code_is_checked():
    rules = rule_envs()
    names = {r for r, _, _ in rules}
    assert len(rules) >= 12, names
