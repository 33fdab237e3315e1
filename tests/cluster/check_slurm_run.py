"""Check a SLURM run of the tiny study against SLURM's records and a local run.

usage: check_slurm_run.py LOCAL_DIR SLURM_DIR JOBCOMP_FILE
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def jobcomp_records(path: Path) -> dict[int, dict[str, str]]:
    records = {}
    for line in path.read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            records[int(fields["JobId"])] = fields
    return records


def submitted_jobs(workdir: Path) -> dict[int, str]:
    """SLURM job id → rule of every job the executor plugin submitted, from Snakemake's log.

    The plugin deletes the per-job logs of successful jobs, so its submission lines in the
    main log are the lasting record on our side.
    """
    jobs = {}
    pattern = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_([^/]+)/")
    for log in (workdir / ".snakemake" / "log").glob("*.snakemake.log"):
        for match in pattern.finditer(log.read_text()):
            jobs[int(match.group(1))] = match.group(2)
    return jobs


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(local: Path, slurm: Path, jobcomp: Path) -> int:
    records = jobcomp_records(jobcomp)
    jobs = submitted_jobs(slurm)
    problems = []
    if not jobs:
        problems.append("the executor submitted no job through sbatch")
    for job_id, rule in sorted(jobs.items()):
        state = records.get(job_id, {}).get("JobState")
        if state != "COMPLETED":
            problems.append(f"job {job_id} ({rule}): SLURM records state {state}")
    rules = sorted(set(jobs.values()))
    print(f"{len(jobs)} jobs went through sbatch, {len(records)} in SLURM's job records; rules: {rules}")

    # Stimuli are byte-identical; tables agree to float tolerance (threads may differ).
    stimuli = sorted(p.relative_to(local) for p in (local / "results/stimuli").rglob("*") if p.is_file())
    for rel in stimuli:
        if not (slurm / rel).exists() or file_digest(local / rel) != file_digest(slurm / rel):
            problems.append(f"stimulus file differs: {rel}")
    tables = sorted(p.relative_to(local) for p in (local / "results/tables").rglob("*.parquet"))
    for rel in tables:
        a, b = pd.read_parquet(local / rel), pd.read_parquet(slurm / rel)
        num = a.select_dtypes("number").columns
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            problems.append(f"table shape differs: {rel}")
        elif not np.allclose(a[num].to_numpy(float), b[num].to_numpy(float), atol=1e-4, equal_nan=True):
            problems.append(f"table values differ: {rel}")
    print(f"compared {len(stimuli)} stimulus files and {len(tables)} tables with the local run")
    for line in problems:
        print("PROBLEM:", line)
    print("SLURM CHECK", "FAILED" if problems else "PASSED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
