"""A deterministic synthetic SBIR dataset for tests and the demo: one class per shape, sketches
as amateur free-hand outlines (wobbly, broken, over-traced strokes of varied width, black on
white), photos as shaded coloured silhouettes on varied backgrounds. Sketch i and photo i of a
class share one pose and Sketchy-style names (`<class>_<i>-1.png` <-> `<class>_<i>.jpg`), so
fine-grained pairing works too. `make_clipart_corpus` draws the same shapes as photos and
flat-coloured clip-art for the stand-in CLIP's pre-training: the drawings web CLIP has seen."""
from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
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


@dataclass(frozen=True)
class ClipartCorpus:
    """Where `make_clipart_corpus` wrote the stand-in CLIP's pre-training images."""

    root: Path
    roots: dict[str, Path]
    """Caption kind -> ROOT/<class>/* folder, of "photo", "clip art", "line drawing" (pretrain_clip's input)."""
    classes: tuple[str, ...]
    per_class: int


def _check_sizes(classes: int, per_class: int, size: int) -> None:
    if not 2 <= classes <= len(SHAPES):
        raise SpLIPError(f"--classes {classes}: must be between 2 and {len(SHAPES)}")
    if per_class < 2:
        raise SpLIPError(f"--per-class {per_class}: must be >= 2 (fine-grained negatives need 2 photos)")
    if size < 16:
        raise SpLIPError(f"--size {size}: must be >= 16 pixels")


def _write_atomically(out: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Run `fill(staging)` in a temp folder beside `out` (which must not exist or be empty) and
    rename it into place, so `out` is either complete or absent."""
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SpLIPError(f"{root} already exists and is not an empty folder; choose a new --out or remove it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the dataset is meant to be shared
    try:
        fill(staging)
        if root.exists():
            root.rmdir()
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def make_mini_dataset(out: str | os.PathLike, classes: int = 16, per_class: int = 24, seed: int = 0,
                      size: int = 64) -> MiniDataset:
    """Write the synthetic SBIR dataset to `out` (which must not exist or be empty):
    `sketch/<class>/` free-hand-style PNGs, `photo/<class>/` JPEGs, `unseen.txt` (about a quarter
    of the classes) and README.txt. The same arguments always give the same bytes."""
    _check_sizes(classes, per_class, size)
    names = SHAPES[:classes]
    order = np.random.default_rng([seed, len(SHAPES)]).permutation(classes)
    unseen = tuple(sorted(names[i] for i in order[: max(1, round(classes / 4))]))

    def fill(staging: Path) -> None:
        for class_index, name in enumerate(names):
            (staging / "sketch" / name).mkdir(parents=True)
            (staging / "photo" / name).mkdir(parents=True)
            for i in range(per_class):
                rng = np.random.default_rng([seed, class_index, i])
                pose = _Pose.draw(size, rng)
                sketch, photo = _draw_freehand(_shape(name), pose, rng), _draw_photo(_shape(name), pose, rng)
                (staging / "sketch" / name / f"{name}_{i:04d}-1.png").write_bytes(_encode(sketch, "PNG"))
                (staging / "photo" / name / f"{name}_{i:04d}.jpg").write_bytes(_encode(photo, "JPEG", quality=90))
        (staging / "unseen.txt").write_text("".join(f"{n}\n" for n in unseen))
        (staging / "README.txt").write_text(_readme(classes, per_class, seed, size, unseen))

    root = _write_atomically(out, fill)
    return MiniDataset(root, root / "sketch", root / "photo", root / "unseen.txt", names, unseen, per_class)


_CORPUS_STREAM = 1
"""Extra RNG key of the pre-training corpus: its poses and colours are never those of the SBIR set."""


_CORPUS_KINDS = {"photo": "photo", "clip art": "clipart", "line drawing": "lineart"}
"""Caption kind -> folder of the pre-training corpus."""


def make_clipart_corpus(out: str | os.PathLike, classes: int = 16, per_class: int = 24, seed: int = 0,
                        size: int = 64, kinds: Sequence[str] = tuple(_CORPUS_KINDS)) -> ClipartCorpus:
    """Write what the stand-in CLIP is pre-trained on, standing in for web image-caption pairs,
    one folder per caption kind of `kinds`: `photo/<class>/` photos (drawn like the SBIR set's, in
    other poses and colours), `clipart/<class>/` clip-art (flat-coloured filled silhouettes, half
    with a clean dark outline), `lineart/<class>/` clean vector line drawings (one even, closed
    outline). None of them is a free-hand sketch, and no image of `make_mini_dataset`'s set is among
    them. Each kind's images are the same whichever other kinds are written."""
    _check_sizes(classes, per_class, size)
    unknown = sorted(set(kinds) - set(_CORPUS_KINDS))
    if unknown or not kinds:
        raise SpLIPError(f"corpus kinds {unknown or list(kinds)}: choose from {list(_CORPUS_KINDS)}")
    names = SHAPES[:classes]
    draw = {"photo": _draw_photo, "clip art": _draw_clipart, "line drawing": _draw_lineart}
    folders = {kind: _CORPUS_KINDS[kind] for kind in _CORPUS_KINDS if kind in kinds}

    def fill(staging: Path) -> None:
        for class_index, name in enumerate(names):
            for folder in folders.values():
                (staging / folder / name).mkdir(parents=True)
            for i in range(per_class):
                for kind, folder in folders.items():
                    rng = np.random.default_rng([seed, class_index, i, _CORPUS_STREAM, list(_CORPUS_KINDS).index(kind)])
                    image = draw[kind](_shape(name), _Pose.draw(size, rng), rng)
                    fmt, suffix = ("JPEG", "jpg") if kind == "photo" else ("PNG", "png")
                    (staging / folder / name / f"{name}_{i:04d}.{suffix}").write_bytes(
                        _encode(image, fmt, **({"quality": 90} if fmt == "JPEG" else {})))

    root = _write_atomically(out, fill)
    return ClipartCorpus(root, {kind: root / folder for kind, folder in folders.items()}, names, per_class)


@dataclass(frozen=True)
class _Pose:
    """Where one drawing of a shape lies on the canvas: rotation, anisotropic scale, shift."""

    size: int
    rotation: np.ndarray  # (2, 2)
    scale: np.ndarray  # (2,)
    shift: np.ndarray  # (2,)

    @classmethod
    def draw(cls, size: int, rng: np.random.Generator) -> _Pose:
        angle = np.radians(rng.uniform(-20, 20))
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        scale = rng.uniform(0.55, 0.8) * np.array([rng.uniform(0.88, 1.12), 1.0])
        return cls(size, rotation, scale, rng.uniform(-0.08, 0.08, 2))

    @property
    def canvas(self) -> int:
        return self.size * _SUPERSAMPLE

    def place(self, points: Polygon) -> list[tuple[float, float]]:
        """Shape points (P, 2) in [-1, 1]^2 -> canvas pixel coordinates."""
        posed = (points * self.scale) @ self.rotation.T + self.shift
        return [tuple(p) for p in (posed + 1) * self.canvas / 2]


def _draw_photo(shape: Shape, pose: _Pose, rng: np.random.Generator) -> Image.Image:
    """A shaded coloured silhouette on a plain, gradient or noise background (RGB)."""
    canvas = pose.canvas
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    for outline, is_hole in shape:
        draw.polygon(pose.place(outline), fill=0 if is_hole else 255)
    hue = rng.uniform(0, 1)
    photo = Image.composite(_foreground(canvas, rng, hue), _background(canvas, rng, hue), mask)
    return photo.reduce(_SUPERSAMPLE)


def _draw_clipart(shape: Shape, pose: _Pose, rng: np.random.Generator) -> Image.Image:
    """Clip-art (RGB): the silhouette filled with one flat colour on white, half of them with a
    clean, even, closed dark outline (cartoon style) -- a drawing, but not a free-hand one."""
    canvas = pose.canvas
    colour = tuple(int(c) for c in _random_colour(rng, (0.1, 0.95)))
    outlined = rng.uniform() < 0.5
    clipart = Image.new("RGB", (canvas, canvas), (255, 255, 255))
    draw = ImageDraw.Draw(clipart)
    for outline, is_hole in shape:
        draw.polygon(pose.place(outline), fill=(255, 255, 255) if is_hole else colour)
    if outlined:
        width = max(1, round(3 * _SUPERSAMPLE * pose.size / 64))
        ink = tuple(int(c) for c in _random_colour(rng, (0.0, 0.25)))
        for outline, _ in shape:
            points = pose.place(outline)
            draw.line(points + points[:1], fill=ink, width=width, joint="curve")
    return clipart.reduce(_SUPERSAMPLE)


def _draw_lineart(shape: Shape, pose: _Pose, rng: np.random.Generator) -> Image.Image:
    """A clean vector line drawing (RGB): every outline one even, closed, dark line on white."""
    canvas = pose.canvas
    lineart = Image.new("RGB", (canvas, canvas), (255, 255, 255))
    draw = ImageDraw.Draw(lineart)
    width = max(1, round(rng.uniform(1.5, 3.0) * _SUPERSAMPLE * pose.size / 64))
    ink = tuple(int(c) for c in _random_colour(rng, (0.0, 0.3)))
    for outline, _ in shape:
        points = pose.place(outline)
        draw.line(points + points[:1], fill=ink, width=width, joint="curve")
    return lineart.reduce(_SUPERSAMPLE)


_OUTLINE_POINTS = 72
"""Points per outline after resampling by arc length: wobble and stroke breaks act evenly."""


def _draw_freehand(shape: Shape, pose: _Pose, rng: np.random.Generator) -> Image.Image:
    """An amateur free-hand sketch (L, black on white): each outline wobbles, is drawn in 1-3
    strokes of varied width that leave gaps or overshoot where they meet, and some strokes are
    traced twice."""
    canvas = pose.canvas
    sketch = Image.new("L", (canvas, canvas), 255)
    draw = ImageDraw.Draw(sketch)
    unit = _SUPERSAMPLE * pose.size / 64  # stroke widths are given for a 64 px drawing
    for outline, _ in shape:
        points = _resample_closed(outline, _OUTLINE_POINTS)
        points = points + _wobble(len(points), 0.03, rng)  # the hand's slow drift off the shape
        for stroke in _split_strokes(len(points), rng):
            width = max(1, round(rng.uniform(1.0, 2.8) * unit))
            draw.line(pose.place(points[stroke]), fill=0, width=width, joint="curve")
            if rng.uniform() < 0.35:  # traced over again, a little off the first line
                retrace = points[stroke] + _wobble(len(stroke), 0.012, rng)
                draw.line(pose.place(retrace), fill=0, width=max(1, width - 1), joint="curve")
    return sketch.reduce(_SUPERSAMPLE)


def _resample_closed(outline: Polygon, n: int) -> Polygon:
    """(n, 2) points evenly spaced by arc length along the closed polygon `outline` (P, 2)."""
    closed = np.concatenate([outline, outline[:1]])  # (P + 1, 2)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])  # (P + 1,)
    at = np.linspace(0, arc[-1], n, endpoint=False)
    return np.stack([np.interp(at, arc, closed[:, k]) for k in range(2)], axis=1)


def _split_strokes(n_points: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index arrays of the strokes drawing one closed outline of `n_points`: 1-3 strokes from a
    random start, each ending a few points short of the next (a gap) or past it (an overshoot)."""
    n_strokes = int(rng.integers(1, 4))
    start = int(rng.integers(n_points))
    cuts = np.sort(rng.choice(np.arange(1, n_points), n_strokes - 1, replace=False)) if n_strokes > 1 else []
    bounds = [0, *cuts, n_points]
    strokes = []
    for first, last in zip(bounds[:-1], bounds[1:]):
        end = last + int(rng.integers(-3, 4))  # -3..-1: a gap, 0: meets, 1..3: overshoot
        strokes.append((start + np.arange(first, max(first + 2, end + 1))) % n_points)
    return strokes


def _wobble(n_points: int, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """(n_points, 2) hand-drawn wobble: noise smoothed along the outline, so dense curves bend
    gently instead of zig-zagging."""
    window = max(1, n_points // 8)
    noise = rng.normal(0, amplitude * np.sqrt(window), (n_points, 2))  # sqrt: keeps the amplitude after averaging
    wrapped = np.concatenate([noise[n_points - window + 1:], noise])  # (n_points + window - 1, 2): closed outline
    kernel = np.full(window, 1.0 / window)
    return np.stack([np.convolve(wrapped[:, k], kernel, mode="valid") for k in range(2)], axis=1)


def _random_colour(rng: np.random.Generator, value: tuple[float, float], hue: float | None = None) -> np.ndarray:
    """(3,) float RGB in 0..255 from `hue` (random when None), saturation 0.4-1 and the given value range."""
    hue = rng.uniform(0, 1) if hue is None else hue % 1.0
    sat, val = rng.uniform(0.4, 1.0), rng.uniform(*value)
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


def _foreground(canvas: int, rng: np.random.Generator, hue: float) -> Image.Image:
    """A shaded object colour: a bright-to-dark ramp of one colour of `hue`."""
    colour = _random_colour(rng, (0.55, 1.0), hue)
    shade = 1.15 - 0.55 * _gradient(canvas, rng)  # (canvas, canvas, 1)
    return Image.fromarray(np.clip(colour * shade, 0, 255).astype(np.uint8))


def _background(canvas: int, rng: np.random.Generator, object_hue: float) -> Image.Image:
    """A plain, gradient or smooth-noise background in hues a quarter to three quarters of the
    colour wheel away from the object's, so the object stands out as in a photo."""
    first, second = (_random_colour(rng, (0.2, 0.95), object_hue + rng.uniform(0.25, 0.75)) for _ in range(2))
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
        "sketch/<class>/<class>_<i>-1.png  free-hand-style black outline on white (grayscale PNG)\n"
        "photo/<class>/<class>_<i>.jpg     shaded coloured shape on a varied background (JPEG)\n"
        "Sketch i and photo i of a class share one pose: a fine-grained pair.\n"
        f"unseen.txt: the {len(unseen)} unseen (zero-shot test) classes; all others are seen.\n"
    )
