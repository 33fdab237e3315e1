"""What every entry script needs: a log file per job and a reproducible process state."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
from typing import Iterator

import numpy as np
from threadpoolctl import threadpool_limits

log = logging.getLogger("avprobe")


@contextlib.contextmanager
def job_log(path: str | os.PathLike | None, threads: int = 1) -> Iterator[logging.Logger]:
    """Send this job's prints, warnings, progress bars and tracebacks to its log file.

    Snakemake keeps one log per job; a failing job's traceback must land there too,
    since that is where a user looks first.
    """
    limit_threads(threads)
    # numpy's BLAS is loaded before this runs, so environment variables come too late for it.
    with threadpool_limits(max(int(threads or 1), 1)):
        if path is None:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
            yield log
        else:
            with _log_file(path):
                yield log


@contextlib.contextmanager
def _log_file(path: str | os.PathLike) -> Iterator[None]:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", buffering=1) as fh:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = fh
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        except BaseException:
            import traceback

            traceback.print_exc(file=fh)
            raise
        finally:
            root.removeHandler(handler)
            sys.stdout, sys.stderr = old_out, old_err


def limit_threads(threads: int) -> None:
    """Keep numeric libraries to the cores Snakemake gave this job."""
    threads = max(int(threads or 1), 1)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (when loaded) torch; return a NumPy generator for local use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    return np.random.default_rng(seed)


#: Seconds between the console's progress lines of one job (the log file gets tqdm's bar).
CONSOLE_INTERVAL = 20.0


class Progress:
    """A progress bar for long work: tqdm's bar in the job's log, and on the console (the
    terminal Snakemake runs in, which a job's log redirection does not reach) one line every
    ``interval`` seconds with the count, throughput and time left, plus a closing line —
    so a long job is never silent on the console. Jobs shorter than ``interval`` print nothing
    there.

    Use as a context manager; ``update(n)`` counts ``n`` more items.
    """

    def __init__(self, total: int, desc: str, unit: str = "item", interval: float = CONSOLE_INTERVAL,
                 console=None):
        from tqdm import tqdm

        # no monitor thread: some callers fork worker processes, and forking beside threads is unsafe
        tqdm.monitor_interval = 0
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=5.0, ascii=True)
        self.total, self.desc, self.unit, self.interval = int(total), desc, unit, float(interval)
        self.console = console if console is not None else sys.__stderr__
        self.start = self.last = time.monotonic()
        self.n = 0
        self.spoke = False

    def _say(self, text: str) -> None:
        if self.console is not None:
            print(f"[avprobe] {self.desc}: {text}", file=self.console, flush=True)
            self.spoke = True

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and self.n < self.total:
            self.last = now
            rate = self.n / max(now - self.start, 1e-9)
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            self._say(f"{self.n}/{self.total} {self.unit}s ({100 * self.n / max(self.total, 1):.0f} %), "
                      f"{rate:.1f} {self.unit}s/s, about {left:.0f} s left")

    def close(self) -> None:
        self.bar.close()
        seconds = time.monotonic() - self.start
        if self.spoke or seconds >= self.interval:
            self._say(f"done, {self.n} {self.unit}s in {seconds:.0f} s ({self.n / max(seconds, 1e-9):.1f} {self.unit}s/s)")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
