"""Check a SLURM run of the tiny study against SLURM's records and a local run.

usage: check_slurm_run.py LOCAL_DIR SLURM_DIR JOBCOMP_FILE [PLANNED_DRY_RUN PARTITION]

With the dry run of the same command (PLANNED_DRY_RUN) and the partition, every job's record
must also show the partition, memory, time limit and CPUs that Snakemake planned for its rule.
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


def planned_resources(dry_run: Path) -> dict[str, set[tuple[int, int, int]]]:
    """rule → the (mem_mb, runtime, cpus_per_task) its planned jobs ask for (a dry run's text)."""
    planned: dict[str, set[tuple[int, int, int]]] = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n)", dry_run.read_text()):
        rule = re.search(r"^\s*rule (\w+):\s*$", block, re.M)
        res = re.search(r"^\s*resources: (.*)$", block, re.M)
        if rule and res:
            r = dict(item.split("=", 1) for item in res.group(1).split(", "))
            planned.setdefault(rule.group(1), set()).add((int(r["mem_mb"]), int(r["runtime"]), int(r["cpus_per_task"])))
    return planned


def minutes(limit: str) -> int:
    """SLURM's time limit ([days-]hours:minutes:seconds, or minutes) in minutes."""
    if limit.isdigit():
        return int(limit)
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)


def record_resources(fields: dict[str, str]) -> tuple[int, int, int]:
    """(mem_mb, time limit in minutes, CPUs) of one job in SLURM's completion record."""
    tres = dict(item.split("=", 1) for item in fields.get("Tres", "").split(",") if "=" in item)
    mem = tres.get("mem", "0M")
    mem_mb = int(float(mem[:-1]) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[mem[-1]]) if mem[-1].isalpha() else int(mem)
    cpus = int(tres.get("cpu") or fields.get("ProcCnt", 0))
    return mem_mb, minutes(fields.get("TimeLimit", "0")), cpus


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(local: Path, slurm: Path, jobcomp: Path, dry_run: Path | None = None, partition: str | None = None) -> int:
    records = jobcomp_records(jobcomp)
    jobs = submitted_jobs(slurm)
    problems = []
    if not jobs:
        problems.append("the executor submitted no job through sbatch")
    for job_id, rule in sorted(jobs.items()):
        state = records.get(job_id, {}).get("JobState")
        if state != "COMPLETED":
            problems.append(f"job {job_id} ({rule}): SLURM records state {state}")
    if dry_run is not None:
        planned = planned_resources(dry_run)
        for job_id, rule in sorted(jobs.items()):
            fields = records.get(job_id)
            if not fields:
                continue
            if partition and fields.get("Partition") != partition:
                problems.append(f"job {job_id} ({rule}): partition {fields.get('Partition')}, not {partition}")
            got = record_resources(fields)
            if got not in planned.get(rule, set()):
                problems.append(f"job {job_id} ({rule}): SLURM records (mem_mb, minutes, cpus) {got}, "
                                f"planned {sorted(planned.get(rule, set()))}")
        print(f"checked partition, memory, time limit and CPUs of {len(jobs)} jobs against the plan")
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
    extra = sys.argv[4:6]
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
                  Path(extra[0]) if extra else None, extra[1] if len(extra) > 1 else None))
