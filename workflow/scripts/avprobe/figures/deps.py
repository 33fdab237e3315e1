"""Which source files draw each figure, so that each figure's rule can list them as inputs.

Snakemake's code trigger sees only a rule's ``script:`` file (``workflow/scripts/figure.py``,
shared by all figures). The code that draws a figure lives in its own module
``avprobe/figures/<figure>.py`` and the package modules it imports (``common``, ``style``,
...). rules/figures.smk declares :func:`sources` of each figure as that figure's inputs, so
editing one figure's module reruns exactly that figure, and editing a shared module (e.g.
``style.py``) reruns every figure that imports it.

This module reads the import statements as text (no matplotlib import), so the Snakefile stays
fast to parse.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

#: Every figure with a module ``avprobe/figures/<figure>.py`` (rules/common.smk picks which
#: of them a config builds).
FIGURES = (
    "stimulus_montage",
    "symbolism_auc",
    "symbolism_scores",
    "symbolism_forms",
    "rsa_layers",
    "rsa_partial",
    "rdm_heatmaps",
    "probe_layers",
    "retrieval_recall",
    "dense_heatmaps",
)

#: Modules every figure runs through besides its own: the renderer (which imports the
#: figure's module by name, out of sight of the import scan below).
ALWAYS = ("render",)


_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)",
                   re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n#]*)", re.MULTILINE)


@lru_cache(maxsize=None)
def _package_imports(path: Path) -> frozenset[str]:
    """Names of the sibling modules of this package that ``path`` imports (any nesting)."""
    text = path.read_text(encoding="utf-8")
    package = __package__ or "avprobe.figures"
    found = set()
    for dots, module, names in _FROM.findall(text):
        imported = [n.split(" as ")[0].strip() for n in names.strip("()").split(",")]
        if dots == ".":  # from . import x / from .x import y
            found.update([module.split(".")[0]] if module else imported)
        elif not dots and module.startswith(package + "."):
            found.add(module[len(package) + 1:].split(".")[0])
        elif not dots and module == package:
            found.update(imported)
    for names in _IMPORT.findall(text):
        for name in names.split(","):
            name = name.split(" as ")[0].strip()
            if name.startswith(package + "."):
                found.add(name[len(package) + 1:].split(".")[0])
    return frozenset(name for name in found if (PACKAGE_DIR / f"{name}.py").is_file())


@lru_cache(maxsize=None)
def module_closure(name: str) -> tuple[str, ...]:
    """``name`` and every package module it imports, directly or not (sorted)."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_package_imports(PACKAGE_DIR / f"{current}.py") - seen)
    return tuple(sorted(seen))


def sources(figure: str) -> list[Path]:
    """The package's source files that draw ``figure``: its module, the modules it imports
    (transitively) and the renderer's."""
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; known: {', '.join(FIGURES)}")
    names = set(module_closure(figure))
    for extra in ALWAYS:
        names.update(module_closure(extra))
    names.discard("deps")  # the list of figures, not drawing code
    return [PACKAGE_DIR / f"{name}.py" for name in sorted(names)]


def input_paths(figure: str, workdir: str | Path | None = None) -> list[str]:
    """:func:`sources` as rule inputs: relative to ``workdir`` (default: the current
    directory, Snakemake's working directory) when inside it, else absolute."""
    base = Path(workdir or Path.cwd()).resolve()
    out = []
    for path in sources(figure):
        try:
            out.append(str(path.relative_to(base)))
        except ValueError:
            out.append(str(path))
    return out
