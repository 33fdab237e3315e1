"""Impact sounds with physical ground truth (seed 001: material, hollowness, spatial extension).

Every sound is the response of a struck object, synthesised as a sum of exponentially
decaying modes (modal synthesis)::

    x(t) = Σ_k  A_k · G(f_k) · exp(−α(f_k) t) · sin(2π f_k t)

The physical factors act through the modes, each in the way the physics says:

**Geometry / spatial extension → mode-frequency ratios** ``f_k = f0 · r_k``.

- ``bar`` (1D): a free-free Euler–Bernoulli beam. ``f_n ∝ β_n²`` with ``β_n`` the roots of
  ``cos β · cosh β = 1`` (4.7300, 7.8532, 10.9956, …), so ``r = 1, 2.7565, 5.4039, 8.9330,
  13.3443, …``. Mode density falls with frequency.
- ``plate`` (2D): a simply supported thin rectangular plate, sides ``a : b = 1.3 : 1``:
  ``f_mn ∝ m² + (1.3 n)²`` (m, n ≥ 1), ratios to the (1, 1) mode. Constant mode density.
- ``block`` (3D): the volume modes of a free rectangular solid, sides ``1 : 0.8 : 0.65``
  (scalar wave approximation): ``f_lmn ∝ √(l² + (m/0.8)² + (n/0.65)²)``, ratios to the
  (1, 0, 0) mode. Mode density grows as f², the signature of a volume.

**Material → wave speed and frequency-dependent damping.** ``c = √(E/ρ)`` (Young's modulus,
density) sets the pitch of objects of one shape and size; every mode decays at
``α(f) = a + b·f²`` (1/s; a Rayleigh-type law as in Aramaki & Kronland-Martinet's impact
synthesiser: a frequency-independent part for support and radiation losses, a
viscoelastic part growing with f²). ``a`` and ``b`` per material give the usual order of
ringing: metal > glass > stone > wood > plastic (T60 = 3 ln 10 / α). The material's hardness
sets the contact time τ of the strike (:data:`MATERIALS`).

**Size → fundamental.** For geometrically similar objects every frequency scales as
``c / L`` (dimensional analysis), so ``f0 = F_REF · (c / C_REF) · (L_REF / L)``, with ``L``
the object's largest dimension in metres (``sizes`` in the config).

**Hollow vs solid.** A hollow object (tube, hollow-core panel, closed box) has the same
outer shape as its solid counterpart, and (1) an enclosed air volume whose own resonances
join the structural ones — an open air column for a bar (``n · c_air / 2L``), the 2D
cavity of a panel, the 3D cavity of a box (``c_air = 343 m/s``, weaker and more damped
than the structure's), so its modes are denser; (2) thin walls that radiate more per unit
of mass: the frequency-independent damping ``a`` is higher (``HOLLOW_EXTRA_DAMPING``).

**Excitation.** A hammer in contact for τ seconds applies a half-sine force pulse, whose
spectrum weights every mode: ``G(f) = |cos(π f τ) / (1 − (2 f τ)²)|`` (1 at f = 0, first
zero at 1.5/τ). Each mode starts at sine phase 0, the impulse response of a struck
oscillator. Mode amplitudes ``A_k = u_k · r_k^(−1/2)``, with ``u_k`` drawn per sound from a
generator seeded with ``seed + index`` (where along the object it was struck).

Modes above 0.45 × the sample rate are left out (no aliasing), at most ``max_modes``
structural modes are kept. Each sound is then post-processed like the speech: trailing
decay below ``trim_threshold_db`` (−60 dB re peak) is cut, a 10 ms fade ends it, and its
loudness is normalised (target RMS, peak limit), mono float32 at 16 kHz.

**Ratings.** Users may bring listeners' judgements (:func:`validate_ratings`): one row per
stimulus × judged dimension × response category, ``stimulus_id, dimension, category,
proportion``, the share of listeners who chose that category; proportions sum to 1 for
each stimulus × dimension. The dimensions of seed 001 are ``material``, ``hollowness``
(hollow | solid) and ``extension`` (1d | 2d | 3d), which are also manifest columns holding
the physical truth. ``resources/stimuli/impact_ratings_example.csv`` is a *synthetic*
example (:func:`example_ratings`), not listener data.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from avprobe.io import write_parquet
from avprobe.ratings import RATING_COLUMNS, RatingsError, read_ratings, validate_ratings  # noqa: F401
from avprobe.stimuli.audio import clip_stats, normalise_loudness, trim_silence, write_wav
from avprobe.stimuli.manifests import with_manifest_paths
from avprobe.stimuli.qc import QcSettings, write_audio_qc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Material:
    youngs_modulus: float  # Pa
    density: float  # kg/m³
    damping_a: float  # 1/s, frequency-independent decay rate
    damping_b: float  # s, coefficient of f² in the decay rate
    contact_time: float  # s, duration of the hammer's contact

    @property
    def wave_speed(self) -> float:
        """Longitudinal (bar) wave speed √(E/ρ) in m/s."""
        return math.sqrt(self.youngs_modulus / self.density)

    def decay_rate(self, f: np.ndarray | float) -> np.ndarray | float:
        """α(f) = a + b f² in 1/s."""
        return self.damping_a + self.damping_b * np.square(f)


#: Typical constants: wood (spruce, along the grain), metal (steel), glass (soda-lime),
#: plastic (PMMA), stone (granite). Damping is chosen for T60 at 1 kHz of about 0.15 s,
#: 3 s, 1.5 s, 0.1 s and 0.4 s, in the order known from impact-sound studies.
MATERIALS: dict[str, Material] = {
    "wood": Material(11e9, 550.0, 25.0, 21e-6, 0.8e-3),
    "metal": Material(200e9, 7850.0, 1.5, 0.8e-6, 0.3e-3),
    "glass": Material(70e9, 2500.0, 2.0, 2.6e-6, 0.3e-3),
    "plastic": Material(3.2e9, 1190.0, 40.0, 29e-6, 1.0e-3),
    "stone": Material(50e9, 2700.0, 8.0, 9e-6, 0.4e-3),
}

GEOMETRIES = ("bar", "plate", "block")
#: Spatial extension of each geometry (seed 001's categories).
EXTENSION = {"bar": "1d", "plate": "2d", "block": "3d"}
#: What the object is, solid and hollow.
OBJECT = {
    ("bar", False): "rod",
    ("bar", True): "tube",
    ("plate", False): "plate",
    ("plate", True): "hollow panel",
    ("block", False): "block",
    ("block", True): "box",
}

#: f0 = F_REF · (c / C_REF) · (L_REF / L)
F_REF = 1500.0
C_REF = 5000.0
L_REF = 0.1
C_AIR = 343.0
PLATE_ASPECT = 1.3
BLOCK_SIDES = (1.0, 0.8, 0.65)
#: Extra frequency-independent damping (1/s) of thin-walled hollow objects.
HOLLOW_EXTRA_DAMPING = 3.0
#: Air-cavity modes: amplitude relative to the structure's first mode, and decay a + b f².
CAVITY_AMPLITUDE = 0.3
CAVITY_DAMPING = (30.0, 4e-6)
#: Highest mode kept, as a fraction of the sample rate.
MAX_MODE_FRACTION = 0.45
FADE_MS = 10.0

#: Seed 001's judged dimensions → the manifest column with their physical truth.
RATING_DIMENSIONS = {"material": "material", "hollowness": "hollowness", "extension": "extension"}


# --- mode ratios ---------------------------------------------------------------------------


@lru_cache(maxsize=None)
def beam_roots(n: int) -> tuple[float, ...]:
    """The first ``n`` nonzero roots β of cos β · cosh β = 1 (free-free beam)."""
    from scipy.optimize import brentq

    roots = []
    for k in range(1, n + 1):
        centre = (k + 0.5) * math.pi  # the roots approach (k + ½)π quickly
        roots.append(brentq(lambda x: math.cos(x) * math.cosh(x) - 1.0, centre - 0.5, centre + 0.5, xtol=1e-13))
    return tuple(roots)


def _grid_ratios(values: np.ndarray, n: int) -> np.ndarray:
    values = np.unique(np.round(values, 9))  # degenerate modes sound as one
    return values[:n] / values[0]


@lru_cache(maxsize=None)
def mode_ratios(geometry: str, n: int = 40) -> tuple[float, ...]:
    """The lowest ``n`` mode-frequency ratios f_k / f_1 of a geometry (module docstring)."""
    if geometry == "bar":
        beta = np.asarray(beam_roots(n))
        return tuple((beta / beta[0]) ** 2)
    k = np.arange(0, 2 * n + 2)
    if geometry == "plate":
        m, q = np.meshgrid(k[1:], k[1:], indexing="ij")
        return tuple(_grid_ratios((m**2 + (PLATE_ASPECT * q) ** 2).ravel(), n))
    if geometry == "block":
        grid = np.stack(np.meshgrid(k, k, k, indexing="ij"), -1).reshape(-1, 3)[1:]  # not (0, 0, 0)
        return tuple(_grid_ratios(np.sqrt(((grid / np.asarray(BLOCK_SIDES)) ** 2).sum(1)), n))
    raise ValueError(f"unknown geometry {geometry!r}; known: {GEOMETRIES}")


@lru_cache(maxsize=None)
def cavity_factors(geometry: str, n: int = 12) -> tuple[float, ...]:
    """Air-cavity modes of the hollow version, as q in f = q · c_air / (2 L)."""
    k = np.arange(0, n + 2)
    if geometry == "bar":  # open air column of length L: harmonics
        return tuple(float(q) for q in range(1, n + 1))
    if geometry == "plate":  # thin closed air layer L × L/1.3: 2D rigid-wall cavity
        m, q = np.meshgrid(k, k, indexing="ij")
        values = np.sqrt(m**2 + (PLATE_ASPECT * q) ** 2).ravel()
    elif geometry == "block":  # closed box: 3D rigid-wall cavity
        grid = np.stack(np.meshgrid(k, k, k, indexing="ij"), -1).reshape(-1, 3)
        values = np.sqrt(((grid / np.asarray(BLOCK_SIDES)) ** 2).sum(1))
    else:
        raise ValueError(f"unknown geometry {geometry!r}; known: {GEOMETRIES}")
    values = np.unique(np.round(values[values > 0], 9))
    return tuple(values[:n].tolist())


def contact_gain(f: np.ndarray, contact_time: float) -> np.ndarray:
    """|spectrum| of a half-sine force pulse of duration τ, normalised to 1 at f = 0."""
    x = 2.0 * np.asarray(f, dtype=np.float64) * contact_time
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.cos(np.pi * x / 2.0) / (1.0 - x**2)
    return np.abs(np.where(np.isclose(x, 1.0), np.pi / 4.0, g))


def fundamental(material: str, size: float) -> float:
    """The design f0 (Hz) of an object of this material and largest dimension (m)."""
    return F_REF * (MATERIALS[material].wave_speed / C_REF) * (L_REF / float(size))


# --- plan and synthesis ---------------------------------------------------------------------


def _settings(cfg: Mapping) -> dict:
    defaults = {
        "materials": list(MATERIALS),
        "geometries": list(GEOMETRIES),
        "hollow": [False, True],
        "sizes": [0.08, 0.107, 0.142, 0.19, 0.253, 0.338, 0.45, 0.6],
        "sample_rate": 16000,
        "duration": 1.5,
        "max_modes": 40,
        "target_rms_dbfs": -26.0,
        "peak_limit_dbfs": -1.0,
        "trim_threshold_db": -60.0,
    }
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise ValueError(f"stimuli.impacts: unknown keys {sorted(unknown)}")
    out = {**defaults, **dict(cfg)}
    for key, known in (("materials", MATERIALS), ("geometries", GEOMETRIES)):
        bad = [v for v in out[key] if v not in known]
        if bad:
            raise ValueError(f"stimuli.impacts.{key}: unknown {bad}; known: {list(known)}")
    if any(float(s) <= 0 for s in out["sizes"]):
        raise ValueError("stimuli.impacts.sizes must be positive lengths in metres")
    return out


def impact_plan(cfg: Mapping, seed: int = 0) -> pd.DataFrame:
    """One row per sound, all physical parameters, nothing synthesised.

    Order: size outermost, then material, geometry, hollow, so that the first
    ``materials × geometries × hollow`` rows cover every combination once (smallest size).
    ``stimulus_id`` is ``impact-<material>-<geometry>-<solid|hollow>-s<size index from 1>``.
    """
    s = _settings(cfg)
    rows = []
    for size_index, size in enumerate(s["sizes"], start=1):
        for material in s["materials"]:
            props = MATERIALS[material]
            for geometry in s["geometries"]:
                for hollow in s["hollow"]:
                    hollow = bool(hollow)
                    hollowness = "hollow" if hollow else "solid"
                    f0 = fundamental(material, size)
                    a = props.damping_a + (HOLLOW_EXTRA_DAMPING if hollow else 0.0)
                    alpha0 = a + props.damping_b * f0**2
                    stimulus_id = f"impact-{material}-{geometry}-{hollowness}-s{size_index}"
                    rows.append(
                        {
                            "stimulus_id": stimulus_id,
                            "file": f"{stimulus_id}.wav",
                            "material": material,
                            "geometry": geometry,
                            "extension": EXTENSION[geometry],
                            "hollow": hollow,
                            "hollowness": hollowness,
                            "object": OBJECT[(geometry, hollow)],
                            "size": float(size),
                            "size_index": size_index,
                            "f0": f0,
                            # T60 of the fundamental mode: 60 dB = 3 ln 10 nepers.
                            "decay_time": 3.0 * math.log(10.0) / alpha0,
                            "wave_speed": props.wave_speed,
                            "damping_a": a,
                            "damping_b": props.damping_b,
                            "contact_time": props.contact_time,
                        }
                    )
    plan = pd.DataFrame(rows)
    plan.insert(len(plan.columns), "seed", int(seed) + np.arange(len(plan)))
    return plan


def modes(row: Mapping, sample_rate: int, max_modes: int = 40) -> pd.DataFrame:
    """The modes of one planned sound: frequency, amplitude (after the contact gain),
    decay rate and kind (structure | cavity), below MAX_MODE_FRACTION × the sample rate."""
    rng = np.random.default_rng(int(row["seed"]))
    f_max = MAX_MODE_FRACTION * sample_rate
    ratios = np.asarray(mode_ratios(row["geometry"], int(max_modes)))
    jitter = rng.uniform(0.3, 1.0, size=ratios.size)  # drawn for every mode: same draws at any rate
    freq = row["f0"] * ratios
    amp = jitter / np.sqrt(ratios)
    alpha = row["damping_a"] + row["damping_b"] * freq**2
    kind = ["structure"] * freq.size
    if row["hollow"]:
        q = np.asarray(cavity_factors(row["geometry"]))
        cav_f = q * C_AIR / (2.0 * row["size"])
        cav_jitter = rng.uniform(0.5, 1.0, size=q.size)
        freq = np.concatenate([freq, cav_f])
        amp = np.concatenate([amp, CAVITY_AMPLITUDE * cav_jitter / np.sqrt(q / q[0])])
        alpha = np.concatenate([alpha, CAVITY_DAMPING[0] + CAVITY_DAMPING[1] * cav_f**2])
        kind += ["cavity"] * q.size
    table = pd.DataFrame({"frequency": freq, "amplitude": amp * contact_gain(freq, row["contact_time"]),
                          "decay_rate": alpha, "kind": kind})  # fmt: skip
    return table[table["frequency"] < f_max].reset_index(drop=True)


def modal_sum(table: pd.DataFrame, sample_rate: int, duration: float) -> np.ndarray:
    """Σ amplitude · exp(−decay_rate t) · sin(2π frequency t) over the rows of a mode table."""
    t = np.arange(int(round(duration * sample_rate)), dtype=np.float64) / sample_rate
    x = np.zeros_like(t)
    for f, a, alpha in zip(table["frequency"], table["amplitude"], table["decay_rate"]):
        x += a * np.exp(-alpha * t) * np.sin(2.0 * np.pi * f * t)
    return x


def synthesize_impact(row: Mapping, sample_rate: int = 16000, duration: float = 1.5, max_modes: int = 40) -> np.ndarray:
    """The raw modal response of one planned sound (float64, not normalised)."""
    return modal_sum(modes(row, sample_rate, max_modes), sample_rate, duration)


def render_impact(row: Mapping, s: Mapping) -> tuple[np.ndarray, dict]:
    """Synthesise, trim the inaudible tail, fade, normalise: the study clip and its stats."""
    rate = int(s["sample_rate"])
    table = modes(row, rate, int(s["max_modes"]))
    x = modal_sum(table, rate, float(s["duration"]))
    x = trim_silence(x, rate, float(s["trim_threshold_db"]), margin_ms=FADE_MS)
    fade = min(int(round(FADE_MS * rate / 1000.0)), x.size)
    if fade:
        x[-fade:] *= 0.5 * (1.0 + np.cos(np.pi * np.arange(1, fade + 1) / fade))
    clip, gain_db, limited = normalise_loudness(x, float(s["target_rms_dbfs"]), float(s["peak_limit_dbfs"]))
    return clip, {"gain_db": gain_db, "peak_limited": limited, "n_modes": len(table)}


def synthesize_impacts(
    cfg: Mapping, seed: int, out_manifest: str | os.PathLike, out_dir: str | os.PathLike
) -> pd.DataFrame:
    """The ``impacts`` set: every planned sound as a WAV in ``out_dir``, the manifest, and
    the QC table beside it. ``cfg`` is the ``stimuli.impacts`` section."""
    s = _settings(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = impact_plan(s, seed)
    start = time.perf_counter()
    stats = []
    for row in plan.to_dict("records"):
        clip, extra = render_impact(row, s)
        write_wav(out_dir / row["file"], clip, int(s["sample_rate"]))
        stats.append({"sample_rate": int(s["sample_rate"]), **clip_stats(clip, int(s["sample_rate"])), **extra})
    elapsed = time.perf_counter() - start
    manifest = pd.concat([plan, pd.DataFrame(stats)], axis=1)
    manifest = with_manifest_paths(manifest, out_dir, out_manifest)
    write_parquet(manifest, out_manifest)
    write_audio_qc(out_manifest, settings=QcSettings(silence_db=float(s["trim_threshold_db"])))
    log.info(
        "impacts: %d sounds (%s) in %.1f s (%.1f sounds/s) → %s",
        len(manifest), ", ".join(f"{k}={manifest[k].nunique()}" for k in ("material", "geometry", "hollow", "size")),
        elapsed, len(manifest) / max(elapsed, 1e-9), out_manifest,
    )  # fmt: skip
    return manifest


# --- listener ratings ------------------------------------------------------------------------


#: Probability that a synthetic listener names the true category, per dimension.
_EXAMPLE_ACCURACY = {"material": 0.6, "hollowness": 0.75, "extension": 0.5}


def example_ratings(plan: pd.DataFrame, n_listeners: int = 17, seed: int = 0) -> pd.DataFrame:
    """SYNTHETIC ratings for tests and examples: per stimulus and dimension, ``n_listeners``
    simulated answers, right with the probability in ``_EXAMPLE_ACCURACY`` and otherwise
    spread evenly over the other categories. Not listener data."""
    rng = np.random.default_rng(seed)
    categories = {
        "material": list(MATERIALS),
        "hollowness": ["hollow", "solid"],
        "extension": ["1d", "2d", "3d"],
    }
    rows = []
    for record in plan.to_dict("records"):
        for dimension, cats in categories.items():
            truth = record[RATING_DIMENSIONS[dimension]]
            p_true = _EXAMPLE_ACCURACY[dimension]
            p = np.array([p_true if c == truth else (1 - p_true) / (len(cats) - 1) for c in cats])
            counts = rng.multinomial(n_listeners, p)
            for category, count in zip(cats, counts):
                rows.append(
                    {
                        "stimulus_id": record["stimulus_id"],
                        "dimension": dimension,
                        "category": category,
                        "proportion": count / n_listeners,
                        "count": int(count),
                        "n_listeners": n_listeners,
                        "source": "SYNTHETIC example, not listener data",
                    }
                )
    return pd.DataFrame(rows)
