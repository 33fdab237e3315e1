"""Commands that only make sense when every final output of the config is there.

- ``snakemake --report``: figure paths do not depend on the config, so a report built with
  ``--configfile config/paper.yaml`` before the paper run would show the default run's figures
  (or none) and exit 0.
- ``snakemake --touch``: marks the outputs of every planned job as up to date; after copying
  only part of ``results/`` into a clone it would record missing files as done.

rules/common.smk calls :func:`check_final_outputs` when the command line asks for either, and
the workflow stops naming the missing outputs.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

WHY = {
    "--report": "the report would show another run's files or none",
    "--touch": "--touch would record missing files as up to date; to redraw one figure from "
    "copied tables, run: snakemake results/figures/<name>.pdf --allowed-rules figure_<name>",
}


def requested(argv: list[str]) -> list[str]:
    """Which of ``--report``, ``--touch`` (or ``-t``) the snakemake command line asks for."""
    found = []
    for flag in WHY:
        if any(arg == flag or arg.startswith(flag + "=") for arg in argv[1:]):
            found.append(flag)
    if "-t" in argv[1:] and "--touch" not in found:
        found.append("--touch")
    return found


def check_final_outputs(
    flag: str, targets: list[str], configfiles: list | None = None, shown: int = 8
) -> None:
    """Raise ValueError naming the missing final outputs of this config (none: return)."""
    targets = list(dict.fromkeys(map(str, targets)))
    missing = [t for t in targets if not Path(t).exists()]
    if not missing:
        return
    folders = Counter(os.path.dirname(m) for m in missing)
    by_folder = ", ".join(f"{folder}/ ({n})" for folder, n in folders.most_common())
    listed = "\n  ".join(missing[:shown]) + ("\n  ..." if len(missing) > shown else "")
    shown_configs = [os.path.relpath(c) if not os.path.relpath(c).startswith("..") else str(c) for c in configfiles or []]
    config_args = "".join(f" --configfile {c}" for c in shown_configs)
    raise ValueError(
        f"snakemake {flag}: {len(missing)} of the {len(targets)} final outputs of this config are "
        f"missing, so {WHY[flag]}. Missing, by folder: {by_folder}:\n  {listed}\n"
        f"Run the workflow with this config first: snakemake{config_args} --cores <n>"
    )
