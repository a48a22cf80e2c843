"""A deterministic synthetic SBIR dataset for tests and the demo: one class per shape, sketches
as jittered black outlines on white, photos as shaded coloured silhouettes on varied
backgrounds. Sketch i and photo i of a class share one pose and Sketchy-style names
(`<class>_<i>-1.png` <-> `<class>_<i>.jpg`), so fine-grained pairing works too."""
from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from splip_engine.errors import SpLIPError

Polygon = np.ndarray  # (P, 2) float64 points in [-1, 1]^2, y pointing down
Shape = list[tuple[Polygon, bool]]  # (outline, is_hole) in drawing order

_SUPERSAMPLE = 2  # draw at 2x and downsample: anti-aliased edges


def _arc(cx: float, cy: float, r: float, start_deg: float, stop_deg: float, n: int = 40) -> Polygon:
    angles = np.radians(np.linspace(start_deg, stop_deg, n))
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)


def _circle(r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> Polygon:
    return _arc(cx, cy, r, 0, 360, 48)[:-1]


def _regular(n: int, r: float = 1.0, start_deg: float = -90.0) -> Polygon:
    return _arc(0, 0, r, start_deg, start_deg + 360, n + 1)[:-1]


def _star(points: int = 5, inner: float = 0.42) -> Polygon:
    outer = _regular(points)
    inner_pts = _regular(points, inner, -90.0 + 180.0 / points)
    return np.stack([outer, inner_pts], axis=1).reshape(-1, 2)


def _poly(*points: tuple[float, float]) -> Polygon:
    return np.array(points, dtype=np.float64)


def _heart() -> Polygon:
    t = np.linspace(0, 2 * np.pi, 60)[:-1]
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 17.0


def _moon() -> Polygon:
    outer = _arc(0, 0, 1, 50, 310)  # the left, bulging side
    end = outer[-1]
    inner_r = float(np.hypot(end[0] - 0.6, end[1]))  # inner circle through both tips
    tip = np.degrees(np.arctan2(end[1], end[0] - 0.6))
    return np.concatenate([outer, _arc(0.6, 0, inner_r, tip, -360 - tip)])  # back via its leftmost point


def _cloud() -> Polygon:
    x = np.linspace(-0.95, 0.95, 48)
    bumps = [(-0.5, 0.1, 0.45), (0.05, -0.2, 0.55), (0.5, 0.1, 0.45)]
    tops = [np.where(np.abs(x - cx) < r, cy - np.sqrt(np.clip(r**2 - (x - cx) ** 2, 0, None)), 0.45)
            for cx, cy, r in bumps]
    return np.concatenate([np.stack([x, np.minimum.reduce(tops)], axis=1), _poly((0.95, 0.45), (-0.95, 0.45))])


def _drop() -> Polygon:
    return np.concatenate([_poly((0, -1)), _arc(0, 0.35, 0.6, -20, 200)])


def _fish() -> Polygon:
    body = _arc(0, 0, 1, 10, 350) * [0.65, 0.4] + [-0.2, 0]  # round the head on the left
    return np.concatenate([body, _poly((0.95, -0.5), (0.75, 0), (0.95, 0.5))])


def _mushroom() -> Polygon:
    return np.concatenate([_arc(0, 0.1, 0.95, 180, 360), _poly((0.3, 0.1), (0.3, 0.9), (-0.3, 0.9), (-0.3, 0.1))])


_BASE: dict[str, Callable[[], Polygon]] = {
    "circle": _circle,
    "square": lambda: _poly((-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)),
    "triangle": lambda: _regular(3) + [0, 0.2],
    "star": _star,
    "cross": lambda: _poly((-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
                           (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)),
    "heart": _heart,
    "arrow": lambda: _poly((-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)),
    "ring": lambda: _circle(),
    "house": lambda: _poly((0, -1), (0.9, -0.15), (0.65, -0.15), (0.65, 0.9), (-0.65, 0.9), (-0.65, -0.15),
                           (-0.9, -0.15)),
    "moon": _moon,
    "lightning": lambda: _poly((0.15, -1), (-0.6, 0.15), (-0.05, 0.15), (-0.3, 1), (0.6, -0.25), (0.05, -0.25),
                               (0.35, -1)),
    "cloud": _cloud,
    "diamond": lambda: _poly((0, -1), (0.6, 0), (0, 1), (-0.6, 0)),
    "hourglass": lambda: _poly((-0.7, -0.9), (0.7, -0.9), (0.1, 0), (0.7, 0.9), (-0.7, 0.9), (-0.1, 0)),
    "tree": lambda: _poly((0, -1), (0.75, 0.4), (0.15, 0.4), (0.15, 0.95), (-0.15, 0.95), (-0.15, 0.4),
                          (-0.75, 0.4)),
    "drop": _drop,
    "fish": _fish,
    "mushroom": _mushroom,
    "hexagon": lambda: _regular(6, 1.0, 0.0),
    "t_shape": lambda: _poly((-0.9, -0.9), (0.9, -0.9), (0.9, -0.45), (0.25, -0.45), (0.25, 0.95), (-0.25, 0.95),
                             (-0.25, -0.45), (-0.9, -0.45)),
}
_HOLES = {"ring": ("circle", 0.55)}  # base shapes that are a solid with a hole
_HOLED_OUTERS = ("square", "circle", "hexagon", "heart", "house")
_HOLE_SHAPES = ("circle", "star", "triangle", "square", "cross")


def _shape_names() -> list[str]:
    """Every class the generator knows: the base shapes, then `<outer>_with_<hole>_hole` combinations."""
    combos = [f"{outer}_with_{hole}_hole" for hole in _HOLE_SHAPES for outer in _HOLED_OUTERS if outer != hole]
    return list(_BASE) + combos


SHAPES = tuple(_shape_names())
"""Class names in generation order; `--classes N` takes the first N."""


def _shape(name: str) -> Shape:
    """Outline polygons of a class, holes after the solid they cut."""
    if name in _BASE:
        hole = _HOLES.get(name)
        solid = [(_BASE[name](), False)]
        return solid + ([(_BASE[hole[0]]() * hole[1], True)] if hole else [])
    outer, hole = name[: -len("_hole")].split("_with_")
    return [(_BASE[outer](), False), (_BASE[hole]() * 0.4, True)]


@dataclass(frozen=True)
class MiniDataset:
    """Where `make_mini_dataset` wrote the dataset and what is in it."""

    root: Path
    sketch_root: Path
    photo_root: Path
    unseen_file: Path
    classes: tuple[str, ...]
    unseen: tuple[str, ...]
    per_class: int


def make_mini_dataset(out: str | os.PathLike, classes: int = 16, per_class: int = 24, seed: int = 0,
                      size: int = 64) -> MiniDataset:
    """Write the synthetic dataset to `out` (which must not exist or be empty): `sketch/<class>/`
    PNGs, `photo/<class>/` JPEGs, `unseen.txt` (about a quarter of the classes) and README.txt.
    The same arguments always give the same bytes. Built in a temp folder and renamed into place,
    so `out` is either complete or absent."""
    if not 2 <= classes <= len(SHAPES):
        raise SpLIPError(f"--classes {classes}: must be between 2 and {len(SHAPES)}")
    if per_class < 2:
        raise SpLIPError(f"--per-class {per_class}: must be >= 2 (fine-grained negatives need 2 photos)")
    if size < 16:
        raise SpLIPError(f"--size {size}: must be >= 16 pixels")
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SpLIPError(f"{root} already exists and is not an empty folder; choose a new --out or remove it")
    names = SHAPES[:classes]
    order = np.random.default_rng([seed, len(SHAPES)]).permutation(classes)
    unseen = tuple(sorted(names[i] for i in order[: max(1, round(classes / 4))]))
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the dataset is meant to be shared
    try:
        for class_index, name in enumerate(names):
            (staging / "sketch" / name).mkdir(parents=True)
            (staging / "photo" / name).mkdir(parents=True)
            for i in range(per_class):
                rng = np.random.default_rng([seed, class_index, i])
                sketch, photo = _render_pair(_shape(name), size, rng)
                (staging / "sketch" / name / f"{name}_{i:04d}-1.png").write_bytes(_encode(sketch, "PNG"))
                (staging / "photo" / name / f"{name}_{i:04d}.jpg").write_bytes(_encode(photo, "JPEG", quality=90))
        (staging / "unseen.txt").write_text("".join(f"{n}\n" for n in unseen))
        (staging / "README.txt").write_text(_readme(classes, per_class, seed, size, unseen))
        if root.exists():
            root.rmdir()
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return MiniDataset(root, root / "sketch", root / "photo", root / "unseen.txt", names, unseen, per_class)


def _render_pair(shape: Shape, size: int, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """One pose, drawn twice: a sketch (L, black outline on white) and a photo (RGB)."""
    canvas = size * _SUPERSAMPLE
    angle = np.radians(rng.uniform(-20, 20))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = rng.uniform(0.55, 0.8) * np.array([rng.uniform(0.88, 1.12), 1.0])
    shift = rng.uniform(-0.08, 0.08, 2)

    def to_pixels(points: Polygon, jitter: float = 0.0) -> list[tuple[float, float]]:
        posed = (points * scale) @ rotation.T + shift + (_wobble(len(points), jitter, rng) if jitter else 0)
        return [tuple(p) for p in (posed + 1) * canvas / 2]

    sketch = Image.new("L", (canvas, canvas), 255)
    stroke = max(1, round(rng.uniform(1.2, 2.6) * _SUPERSAMPLE * size / 64))
    draw = ImageDraw.Draw(sketch)
    for outline, _ in shape:
        points = to_pixels(outline, jitter=0.012)
        draw.line(points + points[:1], fill=0, width=stroke, joint="curve")

    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    for outline, is_hole in shape:
        draw.polygon(to_pixels(outline), fill=0 if is_hole else 255)
    photo = Image.composite(_foreground(canvas, rng), _background(canvas, rng), mask)
    return sketch.reduce(_SUPERSAMPLE), photo.reduce(_SUPERSAMPLE)


def _wobble(n_points: int, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """(n_points, 2) hand-drawn wobble: noise smoothed along the closed outline, so dense curves
    bend gently instead of zig-zagging."""
    window = max(1, n_points // 8)
    noise = rng.normal(0, amplitude * np.sqrt(window), (n_points, 2))  # sqrt: keeps the amplitude after averaging
    wrapped = np.concatenate([noise[n_points - window + 1:], noise])  # (n_points + window - 1, 2): closed outline
    kernel = np.full(window, 1.0 / window)
    return np.stack([np.convolve(wrapped[:, k], kernel, mode="valid") for k in range(2)], axis=1)


def _random_colour(rng: np.random.Generator, value: tuple[float, float]) -> np.ndarray:
    """(3,) float RGB in 0..255 from a random hue, saturation 0.4-1 and the given value range."""
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.4, 1.0), rng.uniform(*value)
    channel = np.clip(np.abs((hue * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1)  # hue -> pure RGB
    return 255 * val * (1 - sat + sat * channel)


@functools.lru_cache(maxsize=4)
def _grid(canvas: int) -> np.ndarray:
    """(2, canvas, canvas) float32 pixel coordinates in [-0.5, 0.5)."""
    return (np.mgrid[0:canvas, 0:canvas] / canvas - 0.5).astype(np.float32)


def _gradient(canvas: int, rng: np.random.Generator) -> np.ndarray:
    """(canvas, canvas, 1) float ramp 0..1 along a random direction."""
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    ys, xs = _grid(canvas)
    ramp = xs * direction[0] + ys * direction[1]
    return ((ramp - ramp.min()) / (np.ptp(ramp) + 1e-9))[..., None]


def _foreground(canvas: int, rng: np.random.Generator) -> Image.Image:
    """A shaded object colour: a bright-to-dark ramp of one random colour."""
    colour = _random_colour(rng, (0.55, 1.0))
    shade = 1.15 - 0.55 * _gradient(canvas, rng)  # (canvas, canvas, 1)
    return Image.fromarray(np.clip(colour * shade, 0, 255).astype(np.uint8))


def _background(canvas: int, rng: np.random.Generator) -> Image.Image:
    """A plain, gradient or smooth-noise background."""
    first, second = _random_colour(rng, (0.2, 0.95)), _random_colour(rng, (0.2, 0.95))
    kind = rng.integers(3)
    if kind == 0:
        pixels = np.broadcast_to(first, (canvas, canvas, 3))
    elif kind == 1:
        ramp = _gradient(canvas, rng)
        pixels = first * (1 - ramp) + second * ramp
    else:
        coarse = Image.fromarray((rng.uniform(0, 255, (6, 6))).astype(np.uint8)).resize((canvas, canvas), Image.BICUBIC)
        blend = (np.asarray(coarse, np.float64) / 255)[..., None]
        pixels = first * (1 - blend) + second * blend
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _readme(classes: int, per_class: int, seed: int, size: int, unseen: tuple[str, ...]) -> str:
    return (
        "Synthetic SBIR dataset made by splip-engine (synthetic shapes, free to use).\n\n"
        f"Command: splip-engine data mini --classes {classes} --per-class {per_class} --seed {seed} --size {size}\n\n"
        "sketch/<class>/<class>_<i>-1.png  black outline on white (grayscale PNG)\n"
        "photo/<class>/<class>_<i>.jpg     shaded coloured shape on a varied background (JPEG)\n"
        "Sketch i and photo i of a class share one pose: a fine-grained pair.\n"
        f"unseen.txt: the {len(unseen)} unseen (zero-shot test) classes; all others are seen.\n"
    )
