"""The one visual style of every avprobe figure.

* A seaborn ``ticks`` theme sized for a two-column paper: :data:`SINGLE` (3.5 in) and
  :data:`DOUBLE` (7 in) wide figures with 6.5–8 pt text, so a figure is readable at the width
  it is printed, never scaled down.
* PDFs embed their fonts as TrueType (``pdf.fonttype 42``), as publishers ask.
* Each model keeps one look across all figures (:func:`model_styles`): pretrained models get
  a colour from a colour-blind-safe palette in config order; untrained controls and baselines
  get greys, with dashed (untrained) or dotted (baseline) lines and hatched bars, so a control
  is never mistaken for a pretrained model, even in greyscale. Two baselines differ in their
  dot pattern and marker (:data:`BASELINE_LINESTYLES`).
* :func:`save` writes ``<stem>.pdf`` and ``<stem>.png`` (dpi 200), each atomically.
"""

from __future__ import annotations

import colorsys
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# Matplotlib's PDF backend subsets fonts with fontTools, which logs every glyph at INFO.
logging.getLogger("fontTools").setLevel(logging.WARNING)

#: Figure widths in inches: one column and the full page width of a two-column paper.
SINGLE = 3.5
DOUBLE = 7.0
#: Height of one row of panels, inches.
ROW_HEIGHT = 1.9
DPI = 200

KINDS = ("pretrained", "untrained", "baseline")
LINESTYLES = {"pretrained": "-", "untrained": "--", "baseline": ":"}
#: Baselines are told apart from each other by their dot pattern (and their marker, drawn along
#: their reference lines): the first dotted, the next loosely dotted, then dot-dot-gap patterns.
BASELINE_LINESTYLES = (":", (0, (1, 3)), (0, (1, 1, 1, 4)), (0, (1, 1, 1, 1, 1, 5)))
HATCHES = {"pretrained": "", "untrained": "////", "baseline": "...."}
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h")

#: Colours of the two stimulus classes (Okabe–Ito vermillion and blue).
LABEL_COLORS = {"sharp": "#D55E00", "round": "#0072B2"}
CHANCE_COLOR = "0.25"
#: Chance lines are dash-dotted: dashed is taken by untrained controls, dotted by baselines.
CHANCE_STYLE = (0, (5, 1.5, 1, 1.5))
SIGNIFICANCE_LEVELS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))

RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "sans-serif"],
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7.5,
    "figure.titlesize": 8.5,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "patch.linewidth": 0.5,
    "hatch.linewidth": 0.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlepad": 4,
    "legend.frameon": False,
    "legend.handlelength": 2.2,
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "figure.constrained_layout.use": True,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "image.interpolation": "nearest",
}


def apply() -> None:
    """Install the theme (idempotent); every plotting function calls it first."""
    sns.set_theme(context="paper", style="ticks", rc=RC)
    plt.rcParams.update(RC)


@dataclass(frozen=True)
class ModelStyle:
    """How one model looks in every figure."""

    name: str
    display: str
    kind: str
    color: tuple
    linestyle: str
    marker: str
    hatch: str
    order: int

    @property
    def is_control(self) -> bool:
        return self.kind != "pretrained"

    def line_kwargs(self) -> dict:
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}


def display_name(name: str, spec: Mapping | None) -> str:
    """The config ``display`` name; a control always says it is one."""
    spec = spec or {}
    display = str(spec.get("display") or name)
    kind = spec.get("kind", "pretrained")
    if kind in ("untrained", "baseline") and kind not in display.lower():
        display = f"{display} ({kind})"
    return display


#: Seaborn's colour-blind-safe palette without its grey (grey means "control"), pale yellow last.
PRETRAINED_COLORS = (
    "#0173B2", "#DE8F05", "#029E73", "#CC78BC", "#CA9161", "#56B4E9", "#D55E00", "#FBAFE4",
    "#ECE133",
)


def _pretrained_palette(n: int) -> list[tuple]:
    """The first ``n`` pretrained colours; beyond the palette, husl hues."""
    base = [mcolors.to_rgb(c) for c in PRETRAINED_COLORS]
    if n > len(base):
        base += [tuple(c) for c in sns.color_palette("husl", n - len(base))]
    return base[:n]


def _is_grey(color, tol: float = 0.12) -> bool:
    r, g, b = mcolors.to_rgb(color)
    return colorsys.rgb_to_hsv(r, g, b)[1] < tol


def is_grey(color) -> bool:
    """True for a colour of the grey family (what controls are drawn in)."""
    return _is_grey(color)


def _greys(n: int) -> list[tuple]:
    if n <= 0:
        return []
    if n == 1:
        levels = [0.45]
    else:
        # Never near black (text, CI lines and the chance line are dark) nor near white.
        levels = [0.3 + 0.35 * i / (n - 1) for i in range(n)]
    return [(v, v, v) for v in levels]


def model_styles(models: Mapping | None, extra: Iterable[str] = ()) -> dict[str, ModelStyle]:
    """One :class:`ModelStyle` per model, deterministic in the config's model order.

    ``models`` is the config's ``models`` mapping (name → spec with ``display``, ``kind``);
    ``extra`` names models seen in a table but absent from the config (styled as pretrained,
    after the config's models, in sorted order) so a figure never fails on an unknown name.
    """
    models = dict(models or {})
    names = list(models) + sorted(set(extra) - set(models))
    specs = {n: dict(models.get(n) or {}) for n in names}
    kinds = {n: specs[n].get("kind", "pretrained") for n in names}
    pretrained = [n for n in names if kinds[n] not in ("untrained", "baseline")]
    controls = [n for n in names if kinds[n] in ("untrained", "baseline")]
    colors = dict(zip(pretrained, _pretrained_palette(len(pretrained))))
    colors.update(zip(controls, _greys(len(controls))))
    baselines = [n for n in names if kinds[n] == "baseline"]
    out = {}
    for i, n in enumerate(names):
        kind = kinds[n] if kinds[n] in KINDS else "pretrained"
        linestyle = LINESTYLES[kind]
        if kind == "baseline":
            j = baselines.index(n)
            linestyle = BASELINE_LINESTYLES[j % len(BASELINE_LINESTYLES)]
        out[n] = ModelStyle(
            name=n,
            display=display_name(n, specs[n]),
            kind=kind,
            color=tuple(colors[n]),
            linestyle=linestyle,
            marker=MARKERS[i % len(MARKERS)],
            hatch=HATCHES[kind],
            order=i,
        )
    return out


def model_order(styles: Mapping[str, ModelStyle], names: Iterable[str]) -> list[str]:
    """``names`` sorted by config order (pretrained, untrained and baselines as configured)."""
    return sorted(set(names), key=lambda n: (styles[n].order, n))


def legend_handles(styles: Mapping[str, ModelStyle], names: Iterable[str], kind: str = "line") -> list:
    """Legend entries for ``names``: lines (with marker) or hatched patches for bars."""
    handles = []
    for n in model_order(styles, names):
        s = styles[n]
        if kind == "patch":
            handles.append(
                Patch(facecolor=s.color, edgecolor="white" if not s.hatch else "0.15",
                      hatch=s.hatch, label=s.display)
            )
        else:
            # Baselines' reference lines carry their marker at a few points (tells two apart).
            handles.append(Line2D([], [], label=s.display, **s.line_kwargs()))
    return handles


def stars(p) -> str:
    """``*`` p < .05, ``**`` p < .01, ``***`` p < .001; empty when p is missing or larger."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        return ""
    if p != p:  # NaN
        return ""
    for level, mark in SIGNIFICANCE_LEVELS:
        if p < level:
            return mark
    return ""


def figure_size(ncols: int, nrows: int = 1, *, row_height: float = ROW_HEIGHT,
                extra_height: float = 0.0, width: float | None = None) -> tuple[float, float]:
    """Single-column width for up to two panel columns, else the full page width."""
    if width is None:
        width = SINGLE if ncols <= 2 else DOUBLE
    return (width, row_height * max(nrows, 1) + extra_height)


def empty_panel(ax, message: str = "no rows", detail: str | None = None) -> None:
    """Turn ``ax`` into an explanatory placeholder instead of failing on an empty table."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    text = message if not detail else f"{message}\n{detail}"
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            fontsize=7.5, color="0.35", gid="empty-note", wrap=True)


def empty_figure(message: str = "no rows", detail: str | None = None) -> plt.Figure:
    """A single-column figure that says why there is nothing to plot."""
    apply()
    fig, ax = plt.subplots(figsize=(SINGLE, 1.4))
    empty_panel(ax, message, detail)
    return fig


def lighten(color, amount: float) -> tuple:
    """Mix ``color`` with white; ``amount`` 0 keeps it, 1 gives white."""
    r, g, b = mcolors.to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def _atomic_savefig(fig, path: Path, fmt: str, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format=fmt, **kwargs)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_as(fig, pdf: str | os.PathLike, png: str | os.PathLike) -> tuple[Path, Path]:
    """Write the figure to ``pdf`` and ``png`` (dpi 200), each through a temp file + rename."""
    apply()  # fonttype 42 must be in force when the PDF is written
    pdf, png = Path(pdf), Path(png)
    # Fixed metadata keeps reruns byte-identical, so unchanged figures stay unchanged.
    _atomic_savefig(fig, pdf, "pdf", metadata={"CreationDate": None, "Creator": "avprobe"})
    _atomic_savefig(fig, png, "png", dpi=DPI, metadata={"Software": "avprobe"})
    return pdf, png


def save(fig, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<stem>.pdf`` and ``<stem>.png`` atomically; returns both paths."""
    stem = Path(stem)
    if stem.suffix in (".pdf", ".png"):
        stem = stem.with_suffix("")
    return save_as(fig, stem.parent / f"{stem.name}.pdf", stem.parent / f"{stem.name}.png")
