"""Inputs and tiny models shared by the model tests (tests/test_models.py, tests/test_contract.py).

Tiny random models are built from the architecture configs in resources/model_configs/ with the
family's own builder (transformers' ``save_pretrained`` for most, the original checkpoint layout
for checkpoint families) and loaded back by path, exactly as a downloaded checkpoint would be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "resources" / "model_configs"

TEXTS = ["kiki", "a brown dog runs in the park"]  # the long one fits SigLIP-tiny's 32 positions


def clips(rng=None):
    """A short and a much longer clip (16 kHz)."""
    rng = rng or np.random.default_rng(0)
    t_short, t_long = np.arange(7000) / 16000, np.arange(30000) / 16000
    short = (0.3 * np.sin(2 * np.pi * 220 * t_short) + 0.05 * rng.standard_normal(7000)).astype(np.float32)
    long = (0.3 * np.sin(2 * np.pi * 440 * t_long) + 0.05 * rng.standard_normal(30000)).astype(np.float32)
    return short, long


def images():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    b = np.zeros((120, 90, 3), np.uint8)
    b[20:80, 10:60] = (255, 30, 0)
    return [a, b]


def inputs(tower: str) -> list:
    """Three items of a tower's modality, of different sizes (so a batch needs padding)."""
    if tower == "audio":
        short, long = clips()
        return [short, long, long[:12000]]
    if tower == "image":
        a, b = images()
        return [a, b, a[:64, :200]]
    return TEXTS + ["bouba"]


class Builder:
    """Builds (once per session) a tiny random model with a family's builder; returns its folder."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[tuple[str, str], Path] = {}

    def __call__(self, config: str, builder=None) -> Path:
        from avprobe.models.build import build_untrained

        builder = builder or build_untrained
        key = (config, f"{builder.__module__}.{builder.__qualname__}")
        if key not in self.cache:
            self.cache[key] = Path(builder(CONFIGS / config, self.root / config, seed=0))
        return self.cache[key]
