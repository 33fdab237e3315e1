"""Shared helpers of the benchmark harness: paths, timing, synthetic data, result sections.

Every benchmark module exposes ``run(ctx) -> Section``; ``benchmarks/run.py`` runs each one in
its own process and renders the sections into ``RESULTS.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))


# ----------------------------------------------------------------------------- context / results
@dataclass
class Context:
    """What a benchmark is told: the mode, the cores it may use and a scratch folder."""

    quick: bool
    threads: int
    workdir: Path

    def pick(self, full, quick):
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full


@dataclass
class Section:
    """One benchmark's results: prose, tables and headline ratios."""

    name: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)
    ratios: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = float("nan")
    cpu_seconds: float = float("nan")
    error: str | None = None

    def say(self, text: str) -> None:
        self.paragraphs.append(text)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        self.tables.append({"title": title, "columns": list(columns), "rows": [[cell(v) for v in r] for r in rows]})

    def ratio(self, label: str, value: float, aim: str = "", detail: str = "") -> None:
        """A headline number (``value``: how many times better ours is, or a plain value)."""
        self.ratios.append({"label": label, "value": float(value), "aim": aim, "detail": detail})

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Section":
        return cls(**d)


def cell(v) -> str:
    """A table cell: numbers with 3-4 significant digits, everything else as text."""
    if isinstance(v, str):
        return v
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return num(float(v))
    return str(v)


def num(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1e5 or ax < 1e-3:
        return f"{x:.{digits - 1}e}"
    if ax >= 100:
        return f"{x:,.0f}"
    return f"{x:.{max(0, digits - 1 - int(math.floor(math.log10(ax))))}f}"


def times(x: float) -> str:
    """A ratio as ``12.3×``."""
    return f"{num(x)}×"


# ----------------------------------------------------------------------------- timing
def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one call."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def best_of(n: int, fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """Smallest of ``n`` timings (the least disturbed by other processes) and the last result."""
    best, out = float("inf"), None
    for _ in range(max(1, n)):
        t, out = timed(fn, *args, **kwargs)
        best = min(best, t)
    return best, out


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def log(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def limit_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


# ----------------------------------------------------------------------------- synthetic stimuli
def synthetic_waves(n: int, seed: int = 0, rate: int = 16000, low: float = 0.3, high: float = 1.5) -> list[np.ndarray]:
    """``n`` voice-like float32 clips (harmonics of a gliding f0, noise, an envelope) of random
    length in [low, high] s — the spread of lengths is what batching has to pad."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = int(rng.uniform(low, high) * rate)
        t = np.arange(m) / rate
        f0 = rng.uniform(90, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        wave = sum(np.sin(h * phase) / h for h in range(1, 6))
        wave = wave * np.hanning(m) + 0.02 * rng.standard_normal(m)
        out.append((0.3 * wave / np.max(np.abs(wave))).astype(np.float32))
    return out


def write_audio_set(folder: Path, waves: list[np.ndarray], rate: int = 16000) -> Path:
    """WAV files + a manifest (stimulus_id, path, label) like the ``pseudowords`` set."""
    import pandas as pd
    import soundfile as sf

    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, w in enumerate(waves):
        rel = f"audio/c{i:05d}.wav"
        sf.write(folder / rel, w, rate, subtype="FLOAT")
        rows.append({"stimulus_id": f"c{i:05d}", "path": rel, "label": ("sharp", "round")[i % 2]})
    manifest = folder / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def write_image_set(folder: Path, n: int, size: int = 224, seed: int = 0) -> Path:
    """PNG images of random filled polygons + a manifest, like the ``shapes`` set."""
    import pandas as pd
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img = Image.new("RGB", (size, size), "white")
        k = int(rng.integers(3, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.2, 0.45, k) * size
        pts = [(size / 2 + r * np.cos(a), size / 2 + r * np.sin(a)) for r, a in zip(rad, ang)]
        ImageDraw.Draw(img).polygon(pts, fill=tuple(int(c) for c in rng.integers(0, 200, 3)))
        rel = f"images/s{i:05d}.png"
        img.save(folder / rel)
        rows.append({"stimulus_id": f"s{i:05d}", "path": rel, "label": ("sharp", "round")[i % 2]})
    manifest = folder / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def pseudo_words(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    cons, vows = list("bdgktpslhmnx"), list("aeiou")
    return ["".join(rng.choice(cons) + rng.choice(vows) for _ in range(int(rng.integers(2, 4)))) for _ in range(n)]


def write_text_set(folder: Path, n: int, seed: int = 0) -> Path:
    """Text prompts of 1 to ~14 words (pseudowords inside templates) + a manifest."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    words = pseudo_words(n, seed)
    templates = ["{w}", "a {w}", "a photo of a {w}", "this strange object is called a {w}",
                 "in the picture there is a small shape that people call {w}, next to a {w}"]
    texts = [templates[int(rng.integers(len(templates)))].format(w=w) for w in words]
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.parquet"
    pd.DataFrame({"stimulus_id": [f"t{i:05d}" for i in range(n)], "text": texts,
                  "label": [("sharp", "round")[i % 2] for i in range(n)]}).to_parquet(manifest, index=False)
    return manifest


# ----------------------------------------------------------------------------- subprocess helper
def run_script(script: str | Path, args: Sequence = (), env: dict | None = None, timeout: float = 900) -> dict:
    """Run a script in a fresh interpreter; it prints one JSON line prefixed ``RESULT:``."""
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SCRIPTS), **(env or {})}, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT:"):
            return json.loads(line[len("RESULT:"):])
    raise RuntimeError(f"subprocess failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
