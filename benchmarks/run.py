#!/usr/bin/env python
"""avprobe benchmark harness: one command, ratios measured side by side in one run.

    .venv/bin/python benchmarks/run.py [--quick] [--only NAME ...] [--out benchmarks/RESULTS.md]

Each benchmark runs in its own Python process (so memory peaks, thread pools and imports do not
leak from one into the next); the results are printed and written to ``RESULTS.md`` together
with a description of the machine. See ``benchmarks/README.md`` for what each number means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import ROOT, Context, Section, limit_threads, num  # noqa: E402

#: name → module; the order is the order of RESULTS.md (the workflow run is the slowest, last).
BENCHMARKS = {
    "extraction": "bench_extraction",
    "rsa": "bench_rsa",
    "retrieval": "bench_retrieval",
    "parquet": "bench_parquet",
    "scaling": "bench_scaling",
    "tts": "bench_tts",
    "asr": "bench_asr",
    "workflow": "bench_workflow",
}


# ----------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return f"{head}{' + uncommitted changes' if dirty else ''}" if head else "unknown"
    except OSError:
        return "unknown"


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        libs = [f"{i.get('internal_api')} {i.get('version') or ''}".strip() for i in threadpool_info()
                if i.get("user_api") == "blas"]
        return ", ".join(sorted(set(libs))) or "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def machine(threads: int) -> list[tuple[str, str]]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import torch

        device = "CPU" + (f" (a GPU is visible: {torch.cuda.get_device_name(0)}, not used)" if torch.cuda.is_available() else
                          " (no GPU visible)")
    except Exception:  # noqa: BLE001
        device = "CPU"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return [
        ("date", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", _cpu_model()),
        ("cores", f"{os.cpu_count()} logical, {usable} usable by this process; benchmarks use {threads} threads"),
        ("RAM", f"{_mem_total_gib():.1f} GiB"),
        ("device", device),
        ("load average at start", " / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("python", platform.python_version()),
        ("numpy / BLAS", f"{_version('numpy')} / {_blas()}"),
        ("torch", _version("torch")),
        ("transformers", _version("transformers")),
        ("scipy / pyarrow / pandas", f"{_version('scipy')} / {_version('pyarrow')} / {_version('pandas')}"),
        ("rsatoolbox", _version("rsatoolbox")),
        ("snakemake", _version("snakemake")),
        ("avprobe commit", _git()),
    ]


# ----------------------------------------------------------------------------- worker
def _cpu_seconds(who) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def worker(name: str, quick: bool, threads: int, result_path: Path) -> int:
    """Run one benchmark in this process; write its Section as JSON."""
    limit_threads(threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"avprobe-bench-{name}-") as tmp:
        ctx = Context(quick=quick, threads=threads, workdir=Path(tmp))
        try:
            section = importlib.import_module(BENCHMARKS[name]).run(ctx)
        except Exception:  # noqa: BLE001 - a failed benchmark is reported, the others go on
            section = Section(name, name, error=traceback.format_exc())
    section.seconds = time.perf_counter() - start
    section.cpu_seconds = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)
    result_path.write_text(json.dumps(section.to_json()))
    return 0 if section.error is None else 1


# ----------------------------------------------------------------------------- report
def _esc(text) -> str:
    """A Markdown table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(sections: list[Section], info: list[tuple[str, str]], args, total: float) -> str:
    mode = "quick" if args.quick else "full"
    out = [
        "# avprobe benchmarks",
        "",
        f"Written by `benchmarks/run.py` ({mode} mode"
        + (f", only {', '.join(args.only)}" if args.only else "")
        + f") in {total / 60:.1f} min. Every ratio compares two ways measured side by side in this one run, "
        "on this machine; absolute times depend on the machine and on its other load, ratios much less. "
        "See `benchmarks/README.md` for what each number means.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {k} | {_esc(v)} |" for k, v in info],
        "",
        "## Headline numbers",
        "",
        "| benchmark | number | value | aim | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in sections:
        if s.error:
            out.append(f"| {s.name} | FAILED | — | — | see its section |")
        for r in s.ratios:
            unit = "×" if r["aim"] else ""
            out.append(f"| {s.name} | {_esc(r['label'])} | **{num(r['value'])}{unit}** | {_esc(r['aim'] or '—')} "
                       f"| {_esc(r['detail'])} |")
    out.append("")
    for i, s in enumerate(sections, 1):
        out += [f"## {i}. {s.title}", "",
                f"_Section run time: {s.seconds:.0f} s wall, {s.cpu_seconds:.0f} s CPU (all its processes)._", ""]
        if s.error:
            out += ["**This benchmark failed:**", "", "```", s.error.strip()[-4000:], "```", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            out += [f"**{t['title']}**", "", "| " + " | ".join(_esc(c) for c in t["columns"]) + " |",
                    "|" + "|".join(" --- " for _ in t["columns"]) + "|"]
            out += ["| " + " | ".join(_esc(c) for c in r) + " |" for r in t["rows"]]
            out.append("")
        if s.notes:
            out += [f"- {n}" for n in s.notes]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute); for tests and smoke checks")
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                    help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="where to write the report")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads per benchmark (default: every core usable by this process)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = args.threads or usable
    if args.worker:
        return worker(args.worker, args.quick, threads, args.result)

    names = args.only or list(BENCHMARKS)
    names = [n for n in BENCHMARKS if n in names]
    info = machine(threads)
    print(f"avprobe benchmarks ({'quick' if args.quick else 'full'} mode, {threads} threads): {', '.join(names)}", flush=True)
    env = {**os.environ, "PYTHONHASHSEED": "0", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}}
    sections: list[Section] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="avprobe-bench-") as tmp:
        for name in names:
            print(f"\n== {name}", flush=True)
            result = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--result", str(result),
                   "--threads", str(threads)] + (["--quick"] if args.quick else [])
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env)
            if result.is_file():
                sec = Section.from_json(json.loads(result.read_text()))
            else:
                sec = Section(name, name, error=f"the worker process exited with code {proc.returncode} and no result",
                              seconds=time.perf_counter() - t)
            sections.append(sec)
            if sec.error:
                print(f"   FAILED:\n{sec.error}", flush=True)
            for r in sec.ratios:
                print(f"   {r['label']}: {num(r['value'])}{'×' if r['aim'] else ''}"
                      f"{'  (aim ' + r['aim'] + ')' if r['aim'] else ''}{'  — ' + r['detail'] if r['detail'] else ''}",
                      flush=True)
            print(f"   ({sec.seconds:.0f} s)", flush=True)
    total = time.perf_counter() - start
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    info.append(("load average at end", " / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)"))
    cpu = _cpu_seconds(resource.RUSAGE_CHILDREN)
    info.append(("harness wall time", f"{total:.0f} s ({total / 60:.1f} min)"))
    info.append(("harness CPU time", f"{cpu:.0f} s, all processes (user + system); CPU time / {threads} cores = "
                 f"{cpu / threads / 60:.1f} min, the wall time on an otherwise idle machine if every benchmark kept "
                 f"all cores busy"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(sections, info, args, total))
    print("\nHeadline numbers (measured side by side in this run):", flush=True)
    for sec in sections:
        if sec.error:
            print(f"  {sec.name}: FAILED", flush=True)
        for r in sec.ratios:
            print(f"  {r['label']}: {num(r['value'])}{'×' if r['aim'] else ''}", flush=True)
    print(f"\nwrote {args.out} ({total:.0f} s wall, {cpu:.0f} s CPU in all)", flush=True)
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
