"""Cluster submission: the default resources a SLURM run needs, checked before any job.

Snakemake merges profiles and the command line per top-level key, so a ``--default-resources``
on the command line (or a second profile) silently replaces the whole ``default-resources``
block of ``profiles/slurm``. A run that asks for a SLURM partition must therefore still carry
every resource the profile sets; otherwise the workflow refuses to start and says why.
"""

from __future__ import annotations

import os
import re

#: What every job submitted through profiles/slurm carries (besides the partition).
SLURM_DEFAULTS = ("mem_mb", "runtime", "cpus_per_task")
#: Site settings the SLURM profile reads from the environment.
SLURM_ENVIRONMENT = {"slurm_partition": "AVPROBE_SLURM_PARTITION", "slurm_account": "AVPROBE_SLURM_ACCOUNT"}


def _raw(resource) -> str:
    raw = getattr(resource, "raw", resource)
    return "" if raw is None else str(raw)


def check_default_resources(default_resources) -> None:
    """Raise ValueError when a SLURM run lost part of the profile's default resources.

    ``default_resources`` is ``workflow.resource_settings.default_resources`` (a mapping of
    resource name to snakemake Resource, or None when no default resources are set).
    """
    if not default_resources:
        return
    names = set(default_resources.keys())
    if "slurm_partition" not in names and "slurm_account" not in names:
        return  # not a SLURM submission through the profile
    missing = [name for name in SLURM_DEFAULTS if name not in names]
    if missing:
        raise ValueError(
            "the default resources of this SLURM run lack "
            + ", ".join(missing)
            + ": --default-resources on the command line replaces the whole default-resources "
            "block of profiles/slurm. Set the partition and account with AVPROBE_SLURM_PARTITION "
            "and AVPROBE_SLURM_ACCOUNT and run: snakemake --workflow-profile profiles/slurm "
            "(or repeat every resource of the profile on the command line)"
        )
    for name, variable in SLURM_ENVIRONMENT.items():
        if name in names and re.search(r"\$\{?" + variable + r"\b", _raw(default_resources[name])):
            if variable not in os.environ:
                raise ValueError(
                    f"profiles/slurm reads {name} from the environment: export {variable}=<value> "
                    "(an empty AVPROBE_SLURM_ACCOUNT submits without an account)"
                )
