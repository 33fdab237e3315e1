"""What every entry script needs: a log file per job and a reproducible process state."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
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
