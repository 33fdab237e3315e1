"""Synthetic scenes and their captions, for speech/text–image retrieval.

A scene holds one to three objects (circle, square, triangle or star, in one of six
colours) at distinct named positions on a plain background. Each scene gets
``captions_per_image`` captions from *different* templates, all true of the scene: they are
generated from the composition itself, so a caption never names a colour, shape, position,
count or background the image does not have.

Like the shapes, every scene has its own generator (seed + index) and the captions are
made with the composition, before drawing: :func:`scene_plan` gives both manifests' rows
without rendering. :func:`speak_captions` (from :mod:`avprobe.stimuli.speech`) turns the
caption_text manifest into the spoken ``captions`` set.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from avprobe.io import write_parquet
from avprobe.stimuli.manifests import with_manifest_paths
from avprobe.stimuli.shapes import SUPERSAMPLE, save_png

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 155, 55),
    "blue": (35, 75, 215),
    "yellow": (235, 200, 25),
    "purple": (135, 55, 175),
    "orange": (245, 135, 20),
}
#: Object centres as fractions of the image side. The closest pair is 0.3 apart; an object
#: reaches at most 1.2 × 0.1 from its centre, plus 0.02 jitter, so objects never overlap.
POSITIONS = {
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
    "centre": (0.5, 0.5),
}
BACKGROUNDS = {"white": (255, 255, 255), "grey": (190, 190, 190), "black": (25, 25, 25)}
WHERE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
#: Chance that an object repeats an earlier object's shape and colour; repeats give the
#: counting captions ("there are two blue squares") something to count.
REPEAT_PROBABILITY = 0.35


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article: "a red circle", "an orange star"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _plural(noun: str, n: int) -> str:
    return noun if n == 1 else noun + "s"


def _a_group(colour: str, shape: str, n: int) -> str:
    return _a(f"{colour} {shape}") if n == 1 else f"{NUMBER_WORDS[n]} {colour} {shape}s"


def _there_be(n: int) -> str:
    return "there is" if n == 1 else "there are"


# --- caption templates: composition → every true caption of that kind --------------------


def _captions_position(scene):
    return [_a(f"{o['colour']} {o['shape']} {WHERE[o['position']]}") for o in scene["objects"]]


def _captions_count(scene):
    groups = Counter((o["colour"], o["shape"]) for o in scene["objects"])
    return [
        f"{_there_be(n)} {NUMBER_WORDS[n]} {colour} {_plural(shape, n)}"
        for (colour, shape), n in groups.items()
    ]


def _captions_shape_count(scene):
    groups = Counter(o["shape"] for o in scene["objects"])
    return [f"{_there_be(n)} {NUMBER_WORDS[n]} {_plural(shape, n)}" for shape, n in groups.items()]


def _captions_total(scene):
    n = len(scene["objects"])
    return [f"{_there_be(n)} {NUMBER_WORDS[n]} {_plural('shape', n)} in the picture"]


def _captions_colour_position(scene):
    return [_a(f"{o['colour']} shape {WHERE[o['position']]}") for o in scene["objects"]]


def _captions_shape_position(scene):
    return [_a(f"{o['shape']} {WHERE[o['position']]}") for o in scene["objects"]]


def _captions_attribute(scene):
    return [f"the {o['shape']} {WHERE[o['position']]} is {o['colour']}" for o in scene["objects"]]


def _captions_background(scene):
    return [_a(f"{o['colour']} {o['shape']} on a {scene['background']} background") for o in scene["objects"]]


def _captions_listing(scene):
    groups = Counter((o["colour"], o["shape"]) for o in scene["objects"])
    items = [_a_group(colour, shape, n) for (colour, shape), n in groups.items()]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return [f"a picture of {listed}"]


def _relation(a: str, b: str) -> str | None:
    """How position ``a`` lies relative to ``b``, only when they share a row or a column."""
    (ax, ay), (bx, by) = POSITIONS[a], POSITIONS[b]
    if ay == by and ax != bx:
        return "to the left of" if ax < bx else "to the right of"
    if ax == bx and ay != by:
        return "above" if ay < by else "below"
    return None


def _captions_relation(scene):
    out = []
    for a in scene["objects"]:
        for b in scene["objects"]:
            if a is not b and (relation := _relation(a["position"], b["position"])):
                out.append(f"{_a(a['colour'] + ' ' + a['shape'])} {relation} {_a(b['colour'] + ' ' + b['shape'])}")
    return out


#: Template name → generator of every true caption of that kind (may be empty).
CAPTION_TEMPLATES: dict[str, Callable[[dict], list[str]]] = {
    "position": _captions_position,
    "count": _captions_count,
    "shape_count": _captions_shape_count,
    "total": _captions_total,
    "colour_position": _captions_colour_position,
    "shape_position": _captions_shape_position,
    "attribute": _captions_attribute,
    "background": _captions_background,
    "listing": _captions_listing,
    "relation": _captions_relation,
}


def compose(rng: np.random.Generator) -> dict:
    """A random composition: background, and 1–3 objects at distinct positions."""
    n_objects = int(rng.integers(1, 4))
    positions = rng.choice(list(POSITIONS), size=n_objects, replace=False)
    objects = []
    for position in positions:
        if objects and rng.random() < REPEAT_PROBABILITY:
            model = objects[int(rng.integers(len(objects)))]
            shape, colour = model["shape"], model["colour"]
        else:
            shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
        objects.append(
            {
                "shape": shape,
                "colour": colour,
                "position": str(position),
                # Small jitter in size, place and angle, so no two scenes are pixel-identical.
                "radius": float(rng.uniform(0.075, 0.1)),
                "dx": float(rng.uniform(-0.02, 0.02)),
                "dy": float(rng.uniform(-0.02, 0.02)),
                "rotation": float(rng.uniform(-12, 12)),
            }
        )
    background = str(rng.choice(list(BACKGROUNDS)))
    return {"objects": objects, "background": background}


def choose_captions(scene: dict, n_captions: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``n_captions`` distinct ``(template, text)`` pairs, each from a different template."""
    candidates = {name: make(scene) for name, make in CAPTION_TEMPLATES.items()}
    usable = [name for name, texts in candidates.items() if texts]
    if n_captions > len(usable):
        raise ValueError(f"{n_captions} captions asked for, only {len(usable)} templates fit this scene")
    chosen, seen = [], set()
    for name in rng.permutation(usable):
        texts = [t for t in candidates[name] if t not in seen]
        if not texts:
            continue
        text = texts[int(rng.integers(len(texts)))]
        chosen.append((str(name), text))
        seen.add(text)
        if len(chosen) == n_captions:
            return chosen
    raise ValueError(f"could not find {n_captions} distinct captions for {scene}")


def scene_plan(cfg: Mapping, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of the ``scenes`` and ``caption_text`` manifests (without ``path``); draws nothing.

    ``cfg`` is the ``stimuli.scenes`` section (``images``, ``captions_per_image``, ``size``).
    """
    scenes, captions = [], []
    for index in range(int(cfg["images"])):
        image_seed = int(seed) + index
        rng = np.random.default_rng(image_seed)
        scene = compose(rng)
        image_id = f"scene-{index + 1:04d}"
        objects = scene["objects"]
        scenes.append(
            {
                "stimulus_id": image_id,
                "file": f"{image_id}.png",
                "n_objects": len(objects),
                "shapes": [o["shape"] for o in objects],
                "colours": [o["colour"] for o in objects],
                "positions": [o["position"] for o in objects],
                "background": scene["background"],
                "objects": json.dumps(objects),
                "image_seed": image_seed,
                "size": int(cfg["size"]),
            }
        )
        for k, (template, text) in enumerate(choose_captions(scene, int(cfg["captions_per_image"]), rng)):
            captions.append(
                {
                    "stimulus_id": f"{image_id}-c{k}",
                    "image_id": image_id,
                    "text": text,
                    "template": template,
                    "caption_index": k,
                }
            )
    return pd.DataFrame(scenes), pd.DataFrame(captions)


def _object_outline(shape: str, cx: float, cy: float, r: float, degrees: float) -> list[tuple] | None:
    """Polygon of a square, triangle or star (None for a circle), rotated by ``degrees``."""
    if shape == "square":
        angles = np.deg2rad(45 + np.arange(4) * 90)
        radii = np.full(4, r * 1.2)  # a side of 1.7 r: close to the circle's area
    elif shape == "triangle":
        angles = np.deg2rad(-90 + np.arange(3) * 120)  # pointing up
        radii = np.full(3, r * 1.2)
    elif shape == "star":
        angles = np.deg2rad(-90 + np.arange(10) * 36)
        radii = np.where(np.arange(10) % 2 == 0, r * 1.2, r * 0.5)
    else:
        return None
    angles = angles + np.deg2rad(degrees)
    return list(zip((cx + radii * np.cos(angles)).tolist(), (cy + radii * np.sin(angles)).tolist()))


def _draw_object(draw: ImageDraw.ImageDraw, o: Mapping, big: int, fill) -> None:
    fx, fy = POSITIONS[o["position"]]
    cx, cy, r = (fx + o["dx"]) * big, (fy + o["dy"]) * big, o["radius"] * big
    outline = _object_outline(o["shape"], cx, cy, r, o["rotation"])
    if outline is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(outline, fill=fill)


def draw_scene(row: Mapping) -> Image.Image:
    """Draw a ``scene_plan`` row at ``SUPERSAMPLE`` times the size, then downsample."""
    size = int(row["size"])
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUNDS[row["background"]])
    draw = ImageDraw.Draw(image)
    for o in json.loads(row["objects"]):
        _draw_object(draw, o, big, COLOURS[o["colour"]])
    return image.resize((size, size), Image.Resampling.LANCZOS)


def object_mask(row: Mapping, indices: Sequence[int]) -> np.ndarray:
    """The share of each pixel of the drawn scene covered by the objects ``indices`` (float
    in [0, 1], size × size), drawn exactly as :func:`draw_scene` draws them; later objects
    painted over them are subtracted."""
    size = int(row["size"])
    big = size * SUPERSAMPLE
    objects = json.loads(row["objects"])
    image = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(image)
    wanted = set(int(i) for i in indices)
    for k, o in enumerate(objects):
        if k in wanted:
            _draw_object(draw, o, big, 255)
        elif wanted and k > min(wanted):
            _draw_object(draw, o, big, 0)
    small = image.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def compose_scenes(
    cfg: Mapping,
    seed: int,
    out_dir: str | os.PathLike,
    scenes_manifest: str | os.PathLike,
    caption_text_manifest: str | os.PathLike,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw the ``scenes`` set into ``out_dir``; write it and the ``caption_text`` manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scenes, captions = scene_plan(cfg, seed)
    for row in scenes.to_dict("records"):
        save_png(draw_scene(row), out_dir / row["file"])
    elapsed = time.perf_counter() - start
    scenes = with_manifest_paths(scenes, out_dir, scenes_manifest)
    write_parquet(scenes, scenes_manifest)
    write_parquet(captions, caption_text_manifest)
    log.info(
        "scenes: %d images, %d captions in %.1f s (%.1f images/s) → %s, %s",
        len(scenes), len(captions), elapsed, len(scenes) / max(elapsed, 1e-9),
        scenes_manifest, caption_text_manifest,
    )  # fmt: skip
    return scenes, captions
