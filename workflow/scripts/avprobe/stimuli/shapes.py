"""Sharp and round shape images for the kiki/bouba test.

Sharp shapes are irregular stars: jagged spikes with random tip and notch radii and jittered
angles. Round shapes are smooth closed blobs, a radius function made of a few low Fourier
harmonics. Size (as filled area), rotation, position, fill colour, outline and background
are drawn from the same distributions for both classes, so only the contour tells them apart.

Every image has its own generator, seeded with ``seed + index``, so any image can be
re-made alone. The geometry (and so the continuous ``sharpness``) is computed without
drawing: :func:`shape_plan` gives the manifest rows without rendering a pixel.
"""

from __future__ import annotations

import colorsys
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from avprobe.io import atomic_path, write_parquet
from avprobe.stimuli.manifests import with_manifest_paths

log = logging.getLogger(__name__)

#: Drawn this many times larger, then downsampled with a Lanczos filter (anti-aliasing).
SUPERSAMPLE = 4
#: Outlines are resampled to this many equally spaced points before measuring sharpness.
SHARPNESS_POINTS = 256
#: Vertices of a blob's outline (enough for the polygon to look smooth at 4x).
BLOB_POINTS = 360
LABELS = ("sharp", "round")


@dataclass
class ShapeDesign:
    """Everything needed to draw one image; ``outline`` is in output-pixel coordinates."""

    stimulus_id: str
    label: str
    image_seed: int
    outline: np.ndarray  # (N, 2) closed polygon, x and y in pixels
    params: dict


def star_outline(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """An irregular star of unit outer radius: alternate tip and notch vertices."""
    n_spikes = int(rng.integers(5, 12))
    step = 2 * np.pi / n_spikes
    # Jitter the angles by up to 30% of half a step so the spikes are irregular but never
    # cross each other.
    base = np.arange(2 * n_spikes) * step / 2
    angles = base + rng.uniform(-0.3, 0.3, size=base.size) * step / 2
    tip_radius = rng.uniform(0.7, 1.0, size=n_spikes)
    notch_radius = rng.uniform(0.25, 0.55, size=n_spikes)
    radii = np.empty(2 * n_spikes)
    radii[0::2], radii[1::2] = tip_radius, notch_radius
    points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    points /= np.max(np.hypot(points[:, 0], points[:, 1]))
    return points, {"n_spikes": n_spikes, "notch_ratio": float(notch_radius.mean() / tip_radius.mean())}


def blob_outline(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A smooth closed blob of unit maximum radius: r(θ) = 1 + Σ a_k cos(kθ + φ_k), k = 2..4.

    The amplitudes are small enough (total under 0.36) that r stays positive and the
    contour has no kinks.
    """
    harmonics = np.arange(2, 5)
    amplitudes = rng.uniform(0.0, 0.12, size=harmonics.size)
    phases = rng.uniform(0, 2 * np.pi, size=harmonics.size)
    theta = np.linspace(0, 2 * np.pi, BLOB_POINTS, endpoint=False)
    radius = 1 + (amplitudes[:, None] * np.cos(harmonics[:, None] * theta + phases[:, None])).sum(0)
    points = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    points /= radius.max()
    return points, {"n_spikes": 0, "notch_ratio": float(radius.min() / radius.max())}


def polygon_area(polygon: np.ndarray) -> float:
    """Area enclosed by a simple closed polygon (shoelace formula)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def resample_closed(polygon: np.ndarray, n_points: int) -> np.ndarray:
    """``n_points`` points equally spaced by arc length along a closed polygon."""
    closed = np.vstack([polygon, polygon[:1]])
    lengths = np.hypot(*np.diff(closed, axis=0).T)
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    targets = np.linspace(0, cumulative[-1], n_points, endpoint=False)
    x = np.interp(targets, cumulative, closed[:, 0])
    y = np.interp(targets, cumulative, closed[:, 1])
    return np.stack([x, y], axis=1)


def turning_sharpness(polygon: np.ndarray, n_points: int = SHARPNESS_POINTS) -> float:
    """Mean absolute turning angle (radians) per vertex of the resampled outline.

    Resampling first makes the measure independent of how many vertices a generator
    emits: a smooth contour turns ~2π/n per point, a spiky one turns sharply at its tips
    and notches. It is scale- and rotation-invariant.
    """
    points = resample_closed(np.asarray(polygon, dtype=np.float64), n_points)
    edges = np.diff(np.vstack([points, points[:1]]), axis=0)
    following = np.roll(edges, -1, axis=0)
    cross = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]
    dot = (edges * following).sum(axis=1)
    return float(np.mean(np.abs(np.arctan2(cross, dot))))


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def design_shape(label: str, index: int, number: int, seed: int, size: int) -> ShapeDesign:
    """The geometry and looks of image ``number`` (1-based within its class)."""
    image_seed = int(seed) + int(index)
    rng = np.random.default_rng(image_seed)
    unit, shape_params = star_outline(rng) if label == "sharp" else blob_outline(rng)
    # Size is set by area, not by outer radius: a star of the same outer radius as a blob
    # covers far fewer pixels, and area would then give the label away to pixel baselines.
    # The equivalent-disc radius is drawn from one range for both classes; the outer radius
    # follows from the contour (capped so that the shape fits in the image).
    equivalent_radius = rng.uniform(0.15, 0.25) * size
    radius = min(equivalent_radius * np.sqrt(np.pi / polygon_area(unit)), 0.46 * size)
    rotation = rng.uniform(0, 2 * np.pi)
    margin = radius + 2
    cx, cy = rng.uniform(margin, size - margin, size=2)
    cos, sin = np.cos(rotation), np.sin(rotation)
    outline = unit @ np.array([[cos, sin], [-sin, cos]]) * radius + [cx, cy]

    hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.35, 0.95), rng.uniform(0.45, 0.95)
    fill = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, value))
    outline_width = int(rng.integers(0, 4))  # 0 = no outline
    outline_colour = tuple(int(c * 0.45) for c in fill)
    background = int(rng.integers(225, 256))
    params = {
        "image_seed": image_seed,
        **shape_params,
        "radius": float(radius),
        "area_fraction": float(polygon_area(unit) * radius**2 / size**2),
        "rotation": float(rotation),
        "cx": float(cx),
        "cy": float(cy),
        "fill": _hex(fill),
        "outline_colour": _hex(outline_colour),
        "outline_width": outline_width,
        "background": _hex((background,) * 3),
        "size": int(size),
    }
    return ShapeDesign(f"shape-{label}-{number:04d}", label, image_seed, outline, params)


def shape_designs(cfg: Mapping, seed: int) -> list[ShapeDesign]:
    """``per_class`` sharp then ``per_class`` round designs; image seeds are seed + 0, 1, …"""
    per_class, size = int(cfg["per_class"]), int(cfg["size"])
    return [
        design_shape(label, class_index * per_class + i, i + 1, seed, size)
        for class_index, label in enumerate(LABELS)
        for i in range(per_class)
    ]


def _rows(designs: list[ShapeDesign]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "stimulus_id": d.stimulus_id,
                "file": f"{d.stimulus_id}.png",
                "label": d.label,
                "sharpness": turning_sharpness(d.outline),
                **d.params,
            }
            for d in designs
        ]
    )


def shape_plan(cfg: Mapping, seed: int) -> pd.DataFrame:
    """The manifest rows (without ``path``) for the ``stimuli.shapes`` config; draws nothing."""
    return _rows(shape_designs(cfg, seed))


def draw_shape(design: ShapeDesign) -> Image.Image:
    """Draw at ``SUPERSAMPLE`` times the size, then downsample: smooth, anti-aliased edges."""
    p = design.params
    big = p["size"] * SUPERSAMPLE
    image = Image.new("RGB", (big, big), p["background"])
    draw = ImageDraw.Draw(image)
    points = [tuple(xy) for xy in (design.outline * SUPERSAMPLE).tolist()]
    width = p["outline_width"] * SUPERSAMPLE
    draw.polygon(points, fill=p["fill"], outline=p["outline_colour"] if width else None, width=width)
    return image.resize((p["size"], p["size"]), Image.Resampling.LANCZOS)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def render_shapes(
    cfg: Mapping, seed: int, out_manifest: str | os.PathLike, out_dir: str | os.PathLike
) -> pd.DataFrame:
    """Draw the ``shapes`` set into ``out_dir`` and write its manifest.

    ``cfg`` is the ``stimuli.shapes`` section (``per_class``, ``size``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    designs = shape_designs(cfg, seed)
    for design in designs:
        save_png(draw_shape(design), out_dir / f"{design.stimulus_id}.png")
    elapsed = time.perf_counter() - start
    manifest = with_manifest_paths(_rows(designs), out_dir, out_manifest)
    write_parquet(manifest, out_manifest)
    means = manifest.groupby("label")["sharpness"].mean().round(3).to_dict()
    log.info(
        "shapes: %d images in %.1f s (%.1f images/s); mean sharpness %s → %s",
        len(manifest), elapsed, len(manifest) / max(elapsed, 1e-9), means, out_manifest,
    )  # fmt: skip
    return manifest

