"""Workflow overhead: no-op reruns and one-figure regeneration, with the real snakemake CLI.

Full mode runs the tiny study (``tests/data/tiny_config.yaml``) to completion in a scratch copy
of the workflow (the files ``tests/test_workflow.py::copy_workflow`` copies), then times:
``snakemake -n`` (dry run, nothing to do), ``snakemake`` (real no-op run) and
``snakemake results/figures/rsa_layers.pdf --forcerun figure_rsa_layers`` (one figure redrawn).
Quick mode only plans the tiny study (a dry run over an empty results folder).
If the repository has a ``results/`` folder from a default run, the dry run is timed there too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, Context, Section, log, strip_ansi

WORKFLOW_PARTS = ("Snakefile", "rules", "workflow", "config", "config.yaml", "envs", "profiles", "resources")
SNAKEMAKE = (str(Path(sys.executable).with_name("snakemake")) if Path(sys.executable).with_name("snakemake").exists()
             else shutil.which("snakemake") or "snakemake")
FIGURE = "rsa_layers"


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
        elif src.exists():
            shutil.copy2(src, dest / part)
    shutil.copy2(ROOT / "tests" / "data" / "tiny_config.yaml", dest / "tiny_config.yaml")
    return dest


def snakemake(args: list[str], cwd: Path, check: bool = True) -> tuple[float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t = time.perf_counter()
    proc = subprocess.run([SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t
    out = strip_ansi(proc.stdout + proc.stderr)
    if check and proc.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {cwd}:\n{out[-4000:]}")
    return seconds, out


def planned_jobs(out: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run: rule → count."""
    jobs, inside = {}, False
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("job") and "count" in line:
            inside = True
            continue
        if inside:
            m = re.match(r"^([A-Za-z_][\w]*)\s+(\d+)$", line)
            if m and m.group(1) != "total":
                jobs[m.group(1)] = int(m.group(2))
            elif line.startswith("total") or not line:
                if jobs:
                    break
    return jobs


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def run(ctx: Context) -> Section:
    sec = Section("workflow", "Workflow overhead: no-op rerun and one-figure regeneration")
    cores = str(ctx.threads)
    work = copy_workflow(ctx.workdir / "wf")
    tiny = ["--configfile", "tiny_config.yaml"]
    reps = ctx.pick(3, 1)
    rows = []
    if ctx.quick:
        log("workflow: dry run of the tiny study (quick mode: no full run)")
        t, out = snakemake(["-n", "--cores", cores, *tiny], work)
        jobs = planned_jobs(out)
        sec.say("Quick mode: the tiny study is only planned (dry run over an empty results folder); run the full "
                "mode for the no-op and regeneration timings.")
        rows.append(["plan the whole tiny study (`snakemake -n`, nothing built yet)", t, sum(jobs.values())])
        sec.ratio("workflow: dry run planning the whole tiny study (s)", t, "", f"{sum(jobs.values())} jobs planned")
    else:
        log("workflow: full run of the tiny study (setup, not a measurement of overhead)")
        t_full, out = snakemake(["--cores", cores, *tiny], work)
        n_jobs = sum(planned_jobs(out).values())
        sec.say(
            f"Setup: a full run of the tiny study (`tests/data/tiny_config.yaml`, every stage) in a scratch copy of "
            f"the workflow took {t_full:.0f} s for {n_jobs} jobs with `--cores {cores}`. Then each command below ran "
            f"{reps} times; the table gives the median and the range. All are wall times of the `snakemake` CLI "
            "process, start-up (Python, imports, parsing the rules, building the DAG) included."
        )
        timings = {}
        for label, args in (
            ("no-op dry run: `snakemake -n`", ["-n", "--cores", cores, *tiny]),
            ("no-op run: `snakemake`", ["--cores", cores, *tiny]),
            (f"redraw one figure: `snakemake results/figures/{FIGURE}.pdf --forcerun figure_{FIGURE}`",
             [f"results/figures/{FIGURE}.pdf", "--forcerun", f"figure_{FIGURE}", "--cores", cores, *tiny]),
        ):
            ts, jobs = [], {}
            for _ in range(reps):
                log(f"workflow: {label}")
                t, out = snakemake(args, work)
                ts.append(t)
                jobs = planned_jobs(out)
                if "--forcerun" not in args and jobs:
                    raise RuntimeError(f"{label}: expected nothing to do, snakemake planned {jobs}:\n{out[-3000:]}")
            timings[label] = _median(ts)
            what = ", ".join(f"{k} ×{v}" for k, v in jobs.items()) or "nothing to do"
            rows.append([label, _median(ts), f"{min(ts):.2f}–{max(ts):.2f}", what])
        noop = timings["no-op run: `snakemake`"]
        fig = [v for k, v in timings.items() if k.startswith("redraw")][0]
        sec.ratio("workflow: no-op rerun after a full tiny run (s)", noop, "", "aim < 10 s")
        sec.ratio(f"workflow: regenerate one figure ({FIGURE}) (s)", fig, "", "aim < 10 s")
    log("workflow: dry run of the default study (nothing built)")
    t_default, out = snakemake(["-n", "--cores", cores], work)
    n_default = sum(planned_jobs(out).values())
    if ctx.quick:
        rows.append(["plan the default study (`snakemake -n`, config.yaml, nothing built yet)", t_default, n_default])
    else:
        rows.append(["plan the default study (`snakemake -n`, config.yaml, nothing built yet)", t_default, "—",
                     f"{n_default} jobs planned"])
    cols = (["command (tiny study, scratch copy)", "seconds", "planned jobs"] if ctx.quick else
            ["command (tiny study, scratch copy)", "median s", "range s", "jobs run"])
    sec.table("wall time (lower is better)", cols, rows)

    results = ROOT / "results"
    if (results / "figures").is_dir():
        log("workflow: dry run in the repository (existing results/)")
        t, out = snakemake(["-n", "--cores", cores], ROOT, check=False)
        jobs = planned_jobs(out)
        sec.table("the repository's own results/ (default config)", ["command", "seconds", "planned jobs"],
                  [["`snakemake -n`", t, ", ".join(f"{k} ×{v}" for k, v in jobs.items()) or "nothing to do"]])
        sec.note("Only the dry run is timed in the repository: a real run there could rebuild outputs whose code "
                 "changed since they were made.")
    else:
        sec.note("The repository has no results/ from a full default run, so the no-op and regeneration times were "
                 f"measured on the tiny study only. Its DAG has the same rules as the default study's "
                 f"({n_default} jobs planned for the default config), and Snakemake's no-op cost depends on the "
                 "number of jobs and files, not on the size of the data in them.")
    return sec
