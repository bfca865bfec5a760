"""A procedural image-classification dataset with injectable shortcuts.

Every image shows one drawn animal (a class) made of named parts on a
procedural background texture, optionally stamped with a small text
watermark. Every pixel belongs to exactly one named segment, recorded in a
dense label map in paint order (background, then the parts, then the
watermark on top), so the masks are pixel-exact by construction.

Two shortcuts can be injected with a chosen strength:

- a watermark that appears on a fraction of the images of one class and on no
  other image, and
- a background kind that appears with one class far more often than chance
  (and never with the others).

In a *decorrelated* split the same number of watermarks lands on random images
of every class and background kinds are drawn uniformly, independent of the
class: the out-of-distribution set and the control model's training set.

The segment vocabulary is global and the same for every image
(:data:`SEGMENT_NAMES`); the background kind is per-image metadata
(``background_kind``), not part of the segment name, so that "background"
aggregates across images like any other segment.

Generation is numpy only, vectorised over the batch, and deterministic per
seed: the same :class:`DataConfig` and split always give the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "BACKGROUND_KINDS",
    "CLASS_NAMES",
    "SEGMENT_NAMES",
    "DataConfig",
    "SyntheticImages",
    "make_split",
    "make_splits",
]

#: The classes, in logit order.
CLASS_NAMES: tuple[str, ...] = ("fish", "bird", "cat")
#: The segment vocabulary: label value ``i`` of every label map is ``SEGMENT_NAMES[i]``.
SEGMENT_NAMES: tuple[str, ...] = (
    "background",
    "body",
    "head",
    "eye",
    "tail",
    "fin",
    "beak",
    "leg",
    "ear",
    "watermark",
)
#: Background texture kinds, drawn procedurally.
BACKGROUND_KINDS: tuple[str, ...] = ("grass", "sand", "water", "stripes")

_SEG = {name: i for i, name in enumerate(SEGMENT_NAMES)}
_SPLIT_CODES = {"train": 1, "test": 2, "ood": 3}
_STREAM_OBJECTS, _STREAM_TEXTURES, _STREAM_SHORTCUTS, _STREAM_DECORRELATED = 1, 2, 3, 4

# 3x5 bitmap glyphs for the watermark text; "#" is ink.
_FONT = {
    "S": ("###", "#..", "###", "..#", "###"),
    "A": (".#.", "#.#", "###", "#.#", "#.#"),
    "T": ("###", ".#.", ".#.", ".#.", ".#."),
    "C": ("###", "#..", "#..", "#..", "###"),
    "F": ("###", "#..", "##.", "#..", "#.."),
    "O": ("###", "#.#", "#.#", "#.#", "###"),
    "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
}

_Floats: TypeAlias = npt.NDArray[np.float32]
_Mask: TypeAlias = npt.NDArray[np.bool_]
# (n,) per-image coordinates and lengths of the drawing helpers, and (x, y) points made of them
_Coord: TypeAlias = npt.NDArray[np.float64]
_Point: TypeAlias = tuple[_Coord, _Coord]
_Scalar = TypeVar("_Scalar", bound=np.generic)


@dataclass(frozen=True)
class DataConfig:
    """How to generate the synthetic images.

    Parameters
    ----------
    image_size
        Height and width in pixels (square images, at least 32).
    train_size, test_size, ood_size
        Number of images per split; each is balanced over the classes.
    watermark_class
        Index into :data:`CLASS_NAMES` of the class the watermark co-occurs with.
    watermark_rate
        Fraction of that class's images carrying the watermark in the
        correlated splits (train, test). The decorrelated splits put the same
        number of watermarks on random images of all classes.
    watermark_text
        The watermark's text, drawn with a 3x5 pixel font (letters ``SATCFOX``).
    background_class, background_kind, background_rate
        Fraction ``background_rate`` of the images of ``background_class`` get
        the ``background_kind`` texture and the rest of that class one of the
        other kinds; the other classes draw all kinds uniformly (so the kind
        is correlated with the class, not a give-away, when the rate is above
        ``1 / len(BACKGROUND_KINDS)``). Decorrelated splits draw all kinds
        uniformly for every class.
    colour_jitter
        Half-width of the uniform per-image jitter of each object's colours;
        larger makes the object harder to recognise by colour alone.
    palette_swap
        Probability that an object is drawn in a random class's colour
        palette instead of its own: 0 makes colour a give-away, 1 leaves only
        the shape to tell the classes apart.
    seed
        Seed of every random draw.
    """

    image_size: int = 32
    train_size: int = 2400
    test_size: int = 900
    ood_size: int = 900
    watermark_class: int = 0
    watermark_rate: float = 0.9
    watermark_text: str = "SAT"
    background_class: int = 1
    background_kind: str = "stripes"
    background_rate: float = 0.6
    colour_jitter: float = 0.12
    palette_swap: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise ValueError(f"image_size must be an int >= 32, got {self.image_size!r}")
        for name in ("train_size", "test_size", "ood_size"):
            n = getattr(self, name)
            if not isinstance(n, int) or n < len(CLASS_NAMES):
                raise ValueError(f"{name} must be an int >= {len(CLASS_NAMES)}, got {n!r}")
        for name in ("watermark_class", "background_class"):
            c = getattr(self, name)
            if not isinstance(c, int) or not 0 <= c < len(CLASS_NAMES):
                raise ValueError(f"{name} must be a class index in [0, {len(CLASS_NAMES)}), got {c!r}")
        for name in ("watermark_rate", "background_rate"):
            r = getattr(self, name)
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {r!r}")
        if self.background_kind not in BACKGROUND_KINDS:
            raise ValueError(f"background_kind must be one of {BACKGROUND_KINDS}, got {self.background_kind!r}")
        bad = sorted(set(self.watermark_text) - set(_FONT))
        if not self.watermark_text or bad:
            raise ValueError(
                f"watermark_text must be non-empty and use only the letters {''.join(_FONT)}, "
                f"got {self.watermark_text!r}"
            )
        if 4 * len(self.watermark_text) + 1 > self.image_size:
            raise ValueError(f"watermark_text {self.watermark_text!r} does not fit in {self.image_size} pixels")
        if not 0.0 <= self.palette_swap <= 1.0:
            raise ValueError(f"palette_swap must be in [0, 1], got {self.palette_swap!r}")
        if not 0.0 <= self.colour_jitter <= 0.5:
            raise ValueError(f"colour_jitter must be in [0, 0.5], got {self.colour_jitter!r}")


@dataclass(frozen=True, eq=False)
class SyntheticImages:
    """One split of the synthetic dataset.

    Attributes
    ----------
    images
        (N, H, W, 3) float32 RGB in [0, 1].
    segments
        (N, H, W) uint8 label map; value ``i`` is segment ``segment_names[i]``.
    segment_names
        The segment vocabulary (:data:`SEGMENT_NAMES`).
    label
        (N,) int32 true class, an index into ``class_names``.
    class_names
        The classes in logit order (:data:`CLASS_NAMES`).
    background_kind
        (N,) int8 index into ``background_kinds``.
    background_kinds
        :data:`BACKGROUND_KINDS`.
    watermark
        (N,) bool: whether the image carries the watermark.
    backdrop
        (N, H, W, 3) float32: the background texture alone, what each pixel
        shows when the object and watermark are removed (used to delete
        segments by in-painting).
    colours
        (N, len(segment_names), 3) float32: the flat colour of each part and
        of the watermark (NaN for the background and for absent segments).
    split
        "train", "test" or "ood"; ``correlated`` says whether the shortcuts
        follow the class.
    """

    images: npt.NDArray[np.float32]
    segments: npt.NDArray[np.uint8]
    label: npt.NDArray[np.int32]
    background_kind: npt.NDArray[np.int8]
    watermark: npt.NDArray[np.bool_]
    backdrop: npt.NDArray[np.float32]
    colours: npt.NDArray[np.float32]
    split: str
    correlated: bool
    segment_names: tuple[str, ...] = SEGMENT_NAMES
    class_names: tuple[str, ...] = CLASS_NAMES
    background_kinds: tuple[str, ...] = BACKGROUND_KINDS

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray | slice) -> SyntheticImages:
        """The images at ``index`` (a boolean mask, integer indices or a slice)."""
        return replace(
            self,
            images=self.images[index],
            segments=self.segments[index],
            label=self.label[index],
            background_kind=self.background_kind[index],
            watermark=self.watermark[index],
            backdrop=self.backdrop[index],
            colours=self.colours[index],
        )

    def background_kind_names(self) -> list[str]:
        """The background kind of each image, by name."""
        return [self.background_kinds[k] for k in self.background_kind]


# --------------------------------------------------------------------------- geometry


@dataclass
class _Canvas:
    """Pixel-centre coordinates and the layers being painted, for n images."""

    size: int
    n: int
    xx: _Floats = field(init=False)
    yy: _Floats = field(init=False)

    def __post_init__(self) -> None:
        c = np.arange(self.size, dtype=np.float32) + 0.5
        self.yy = c[None, :, None]
        self.xx = c[None, None, :]


def _col(a: _Coord) -> _Floats:
    return np.asarray(a, np.float32)[:, None, None]


def _ellipse(cv: _Canvas, cx: _Coord, cy: _Coord, a: _Coord, b: _Coord) -> _Mask:
    return ((cv.xx - _col(cx)) / _col(a)) ** 2 + ((cv.yy - _col(cy)) / _col(b)) ** 2 <= 1.0


def _circle(cv: _Canvas, cx: _Coord, cy: _Coord, r: _Coord) -> _Mask:
    return (cv.xx - _col(cx)) ** 2 + (cv.yy - _col(cy)) ** 2 <= _col(r) ** 2


def _triangle(cv: _Canvas, p0: _Point, p1: _Point, p2: _Point) -> _Mask:
    """Pixels whose centre lies inside the triangle (either winding)."""

    def edge(p: _Point, q: _Point) -> _Floats:
        (px, py), (qx, qy) = p, q
        return (_col(qx) - _col(px)) * (cv.yy - _col(py)) - (_col(qy) - _col(py)) * (cv.xx - _col(px))

    e0, e1, e2 = edge(p0, p1), edge(p1, p2), edge(p2, p0)
    return ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))


def _bar(cv: _Canvas, p0: _Point, p1: _Point, width: _Coord) -> _Mask:
    """A thick line segment from p0 to p1 (a capsule of the given width)."""
    (x0, y0), (x1, y1) = (np.asarray(p0[0]), np.asarray(p0[1])), (np.asarray(p1[0]), np.asarray(p1[1]))
    dx, dy = _col(x1 - x0), _col(y1 - y0)
    length2 = dx**2 + dy**2
    # float32 (np.clip of this expression is typed Any)
    t: _Floats = np.clip(((cv.xx - _col(x0)) * dx + (cv.yy - _col(y0)) * dy) / length2, 0.0, 1.0)
    px, py = _col(x0) + t * dx, _col(y0) + t * dy
    return (cv.xx - px) ** 2 + (cv.yy - py) ** 2 <= (_col(width) / 2) ** 2


# --------------------------------------------------------------------------- objects

# Colour palettes (RGB per part name); palette i is class i's own. Each image jitters them.
_PALETTES: tuple[dict[str, tuple[float, float, float]], ...] = (
    {  # orange and yellow (fish)
        "tail": (0.95, 0.45, 0.05),
        "body": (0.98, 0.58, 0.12),
        "fin": (0.90, 0.35, 0.05),
        "head": (1.00, 0.78, 0.25),
        "eye": (0.05, 0.05, 0.10),
        "beak": (0.90, 0.35, 0.05),
        "leg": (0.90, 0.35, 0.05),
        "ear": (0.90, 0.35, 0.05),
    },
    {  # red with yellow highlights (bird)
        "tail": (0.65, 0.10, 0.15),
        "leg": (0.95, 0.80, 0.10),
        "body": (0.85, 0.15, 0.20),
        "head": (0.75, 0.10, 0.35),
        "beak": (1.00, 0.85, 0.05),
        "eye": (0.98, 0.98, 0.98),
        "fin": (0.95, 0.80, 0.10),
        "ear": (0.95, 0.80, 0.10),
    },
    {  # brown and grey (cat)
        "tail": (0.40, 0.28, 0.20),
        "leg": (0.35, 0.25, 0.18),
        "body": (0.50, 0.38, 0.28),
        "head": (0.60, 0.50, 0.42),
        "ear": (0.30, 0.20, 0.15),
        "eye": (0.20, 0.85, 0.30),
        "fin": (0.30, 0.20, 0.15),
        "beak": (0.30, 0.20, 0.15),
    },
)


def _parts(cls: int, cv: _Canvas, cx: _Coord, cy: _Coord, s: _Coord, d: _Coord) -> list[tuple[str, _Mask]]:
    """The part masks of class ``cls`` in paint order; the object faces +x when d = 1."""

    def at(dx: float, dy: float) -> _Point:
        return (cx + d * dx * s, cy + dy * s)

    if cls == 0:  # fish: long body, tail fan behind, fin on top, head and eye in front
        return [
            ("tail", _triangle(cv, at(-6.0, 0.0), at(-11.5, -4.5), at(-11.5, 4.5))),
            ("body", _ellipse(cv, cx, cy, 8.0 * s, 4.5 * s)),
            ("fin", _triangle(cv, at(-3.0, -3.0), at(2.5, -3.5), at(-4.5, -8.0))),
            ("head", _circle(cv, *at(5.0, 0.0), 3.6 * s)),
            ("eye", _circle(cv, *at(6.2, -1.2), 1.3 * s)),
        ]
    if cls == 1:  # bird: round body, raised tail, legs, head with beak and eye
        return [
            ("tail", _triangle(cv, at(-4.0, 0.5), at(-10.5, -4.5), at(-10.0, -0.5))),
            ("leg", _bar(cv, at(-1.5, 4.0), at(-1.5, 9.0), 1.4 * s) | _bar(cv, at(1.5, 4.0), at(1.5, 9.0), 1.4 * s)),
            ("body", _ellipse(cv, cx, cy + 1.0 * s, 6.0 * s, 5.0 * s)),
            ("head", _circle(cv, *at(5.0, -4.5), 3.5 * s)),
            ("beak", _triangle(cv, at(7.8, -5.8), at(7.8, -3.2), at(11.5, -4.5))),
            ("eye", _circle(cv, *at(5.8, -5.3), 1.2 * s)),
        ]
    # cat: low body, tail up behind, four legs, head with two ears and an eye
    legs = [_bar(cv, at(x, 2.0), at(x, 8.0), 1.6 * s) for x in (-5.0, -2.5, 2.5, 5.0)]
    return [
        ("tail", _bar(cv, at(-6.5, -0.5), at(-10.5, -7.5), 1.7 * s)),
        ("leg", legs[0] | legs[1] | legs[2] | legs[3]),
        ("body", _ellipse(cv, cx, cy, 7.5 * s, 3.8 * s)),
        (
            "ear",
            _triangle(cv, at(5.0, -5.5), at(8.5, -5.5), at(5.5, -9.5))
            | _triangle(cv, at(8.0, -5.5), at(10.5, -4.0), at(10.5, -8.5)),
        ),
        ("head", _circle(cv, *at(7.5, -3.0), 3.7 * s)),
        ("eye", _circle(cv, *at(8.8, -3.6), 1.2 * s)),
    ]


def _paint_objects(
    label: npt.NDArray[np.int32], size: int, jitter: float, palette_swap: float, rng: np.random.Generator
) -> tuple[_Floats, npt.NDArray[np.uint8], _Floats]:
    """Object layer: (N,H,W,3) colours, (N,H,W) segment ids (0 where empty), (N,K,3) part colours."""
    n: int = label.shape[0]
    unit = size / 32.0
    cx = size / 2 + rng.uniform(-2.5, 2.5, n) * unit
    cy = size * 0.42 + rng.uniform(-2.0, 2.0, n) * unit
    s = rng.uniform(0.85, 1.1, n) * unit
    d = rng.choice(np.array([-1.0, 1.0]), n)
    # one jitter per image for the whole object (lighting) plus a smaller one per part
    shift = rng.uniform(-jitter, jitter, (n, 1, 3))
    part_shift = rng.uniform(-jitter / 3, jitter / 3, (n, len(SEGMENT_NAMES), 3))
    # with probability palette_swap an image takes a random palette, so colour alone cannot tell the class
    palette = np.where(rng.random(n) < palette_swap, rng.integers(0, len(_PALETTES), n), label)

    seg = np.zeros((n, size, size), np.uint8)
    colours = np.full((n, len(SEGMENT_NAMES), 3), np.nan, np.float32)
    for cls in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(label == cls)
        if idx.size == 0:
            continue
        sub = np.zeros((idx.size, size, size), np.uint8)
        for name, mask in _parts(cls, _Canvas(size, idx.size), cx[idx], cy[idx], s[idx], d[idx]):
            k = _SEG[name]
            base = np.array([_PALETTES[p][name] for p in range(len(_PALETTES))], np.float32)[palette[idx]]
            colours[idx, k] = np.clip(base + shift[idx, 0] + part_shift[idx, k], 0, 1)
            sub[mask] = k
        seg[idx] = sub
    present = np.zeros((n, len(SEGMENT_NAMES)), bool)
    np.put_along_axis(present, seg.reshape(n, -1).astype(np.intp), True, axis=1)
    colours[~present] = np.nan
    # parts are flat, so the object layer is a per-image lookup of its part colours
    rgb = np.take_along_axis(colours, seg.reshape(n, -1, 1).astype(np.intp), axis=1).reshape(n, size, size, 3)
    return rgb, seg, colours


# --------------------------------------------------------------------------- textures


def _texture(kind: str, fine: _Floats, rng: _Subset) -> _Floats:
    """(n, H, W, 3) float32 texture of one kind over the fine noise (n, H, W), random phase, scale and tint."""
    n, size = fine.shape[0], fine.shape[1]
    c = np.arange(size, dtype=np.float32)
    yy, xx = c[None, :, None], c[None, None, :]
    tint = rng.uniform(-0.05, 0.05, (n, 1, 1, 3)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    # float32 throughout: every operand is float32 or a Python scalar (np.sin and np.where are typed as Any)
    out: _Floats
    if kind == "grass":
        blades = rng.normal(0, 1, (n, 1, size)).astype(np.float32)  # a brightness per column
        sway = np.sin(yy * 0.5 + phase) * 0.5
        shade = 0.10 * blades + 0.04 * fine + 0.03 * sway
        base = np.array([0.22, 0.55, 0.18], np.float32)
        out = base + shade[..., None] * np.array([0.6, 1.0, 0.5], np.float32)
    elif kind == "sand":
        angle = rng.uniform(0, np.pi, (n, 1, 1)).astype(np.float32)
        freq = rng.uniform(0.35, 0.6, (n, 1, 1)).astype(np.float32)
        ripple = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq + phase)
        shade = 0.05 * ripple + 0.05 * fine
        out = np.array([0.86, 0.78, 0.58], np.float32) + shade[..., None]
    elif kind == "water":
        fx = rng.uniform(0.2, 0.4, (n, 1, 1)).astype(np.float32)
        wave = np.sin(xx * fx + 2.0 * np.sin(yy * 0.45 + phase))
        shade = 0.08 * wave + 0.03 * fine
        out = np.array([0.18, 0.36, 0.72], np.float32) + shade[..., None] * np.array([0.6, 0.8, 1.0], np.float32)
    elif kind == "stripes":
        width = rng.integers(3, 6, (n, 1, 1)).astype(np.float32)
        slope = rng.choice(np.array([-1.0, 1.0], np.float32), (n, 1, 1))
        offset = rng.uniform(0, 10, (n, 1, 1)).astype(np.float32)
        band = np.floor((xx + slope * yy + offset) / width) % 2
        light = np.array([0.80, 0.72, 0.90], np.float32)
        dark = np.array([0.45, 0.32, 0.60], np.float32)
        out = np.where(band[..., None] > 0, light, dark) + 0.03 * fine[..., None]
    else:  # pragma: no cover - kinds are validated by DataConfig
        raise ValueError(f"unknown background kind {kind!r}")
    texture: _Floats = np.clip(out + tint, 0.0, 1.0).astype(np.float32)  # np.clip of a float32 array is typed Any
    return texture


def _paint_backgrounds(kind: npt.NDArray[np.int8], size: int, rng: np.random.Generator) -> _Floats:
    n: int = kind.shape[0]
    fine = rng.normal(0, 1, (n, size, size)).astype(np.float32)
    out = np.empty((n, size, size, 3), np.float32)
    for k, name in enumerate(BACKGROUND_KINDS):
        # each kind draws its parameters for every image (cheap, one number each) so that an
        # image's texture depends only on its kind and the seed, not on the other images' kinds
        params = np.random.default_rng(rng.integers(0, 2**63))
        idx = np.flatnonzero(kind == k)
        out[idx] = _texture(name, fine[idx], _Subset(params, n, idx))
    return out


class _Subset:
    """A generator view that draws for all n images and keeps the rows in ``idx``."""

    def __init__(self, rng: np.random.Generator, n: int, idx: npt.NDArray[np.intp]) -> None:
        self._rng, self._n, self._idx = rng, n, idx

    def uniform(self, low: float, high: float, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
        return self._rng.uniform(low, high, (self._n,) + tuple(shape[1:]))[self._idx]

    def normal(self, loc: float, scale: float, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
        return self._rng.normal(loc, scale, (self._n,) + tuple(shape[1:]))[self._idx]

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
        return self._rng.integers(low, high, (self._n,) + tuple(shape[1:]))[self._idx]

    def choice(self, values: npt.NDArray[_Scalar], shape: tuple[int, ...]) -> npt.NDArray[_Scalar]:
        return self._rng.choice(values, (self._n,) + tuple(shape[1:]))[self._idx]


# --------------------------------------------------------------------------- watermark


def _glyph_mask(text: str) -> _Mask:
    """(5, 4*len(text) - 1) bool bitmap of the text."""
    cols: list[_Mask] = []
    for i, ch in enumerate(text):
        if i:
            cols.append(np.zeros((5, 1), bool))
        cols.append(np.array([[c == "#" for c in row] for row in _FONT[ch]], bool))
    return np.concatenate(cols, axis=1)


def _paint_watermarks(
    rgb: _Floats,
    seg: npt.NDArray[np.uint8],
    colours: _Floats,
    on: _Mask,
    text: str,
    rng: np.random.Generator,
) -> None:
    """Stamp the text near the bottom edge of the images where ``on`` is true (in place)."""
    n: int = rgb.shape[0]
    size: int = rgb.shape[1]
    glyph = _glyph_mask(text)
    gh, gw = glyph.shape
    y0 = size - gh - 1 - rng.integers(0, 2, n)
    x0 = rng.integers(1, size - gw, n)
    ink = rng.uniform(0.93, 1.0, n).astype(np.float32)
    k = _SEG["watermark"]
    gy, gx = np.nonzero(glyph)
    for i in np.flatnonzero(on):
        ys, xs = y0[i] + gy, x0[i] + gx
        rgb[i, ys, xs] = ink[i]
        seg[i, ys, xs] = k
        colours[i, k] = ink[i]


# --------------------------------------------------------------------------- splits


def _rng(config: DataConfig, split: str, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([config.seed, _SPLIT_CODES[split], stream]))


def _balanced_labels(n: int, rng: np.random.Generator) -> npt.NDArray[np.int32]:
    return rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int32)


def _shortcuts(
    config: DataConfig, label: npt.NDArray[np.int32], correlated: bool, rng: np.random.Generator
) -> tuple[_Mask, npt.NDArray[np.int8]]:
    """Which images carry the watermark and the background kind of each image."""
    n: int = label.shape[0]
    in_class = np.flatnonzero(label == config.watermark_class)
    # int(): the rates may be numpy floats, whose round() gave a float before numpy 2 (numpy#11810)
    count = int(round(config.watermark_rate * in_class.size))  # noqa: RUF046
    watermark = np.zeros(n, bool)
    pool = in_class if correlated else np.arange(n)
    watermark[rng.choice(pool, count, replace=False)] = True

    kinds = len(BACKGROUND_KINDS)
    if not correlated:
        return watermark, rng.integers(0, kinds, n).astype(np.int8)
    special = BACKGROUND_KINDS.index(config.background_kind)
    others = np.array([k for k in range(kinds) if k != special])
    kind = rng.integers(0, kinds, n).astype(np.int8)
    in_bg_class = np.flatnonzero(label == config.background_class)
    kind[in_bg_class] = others[rng.integers(0, others.size, in_bg_class.size)]
    chosen = rng.choice(in_bg_class, int(round(config.background_rate * in_bg_class.size)), replace=False)  # noqa: RUF046
    kind[chosen] = special
    return watermark, kind


def make_split(
    config: DataConfig,
    split: Literal["train", "test", "ood"],
    *,
    correlated: bool | None = None,
) -> SyntheticImages:
    """Generate one split.

    Parameters
    ----------
    config
        The dataset configuration.
    split
        "train", "test" (in-distribution) or "ood". The split fixes the size
        and the random stream of the objects.
    correlated
        Whether the shortcuts follow the class. Default: True for "train" and
        "test", False for "ood". ``make_split(config, "train",
        correlated=False)`` is the control model's training set: the same
        objects as the train split, with watermark and background kind
        independent of the class.

    Returns
    -------
    SyntheticImages

    Examples
    --------
    >>> from sat_fast.demo.data import DataConfig, make_split
    >>> data = make_split(DataConfig(test_size=30), "test")
    >>> data.images.shape, data.segments.dtype.name
    ((30, 32, 32, 3), 'uint8')
    >>> int(data.watermark.sum())  # 90% of the 10 fish
    9
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {tuple(_SPLIT_CODES)}, got {split!r}")
    if correlated is None:
        correlated = split != "ood"
    n = {"train": config.train_size, "test": config.test_size, "ood": config.ood_size}[split]
    size = config.image_size

    obj_rng = _rng(config, split, _STREAM_OBJECTS)
    label = _balanced_labels(n, obj_rng)
    obj_rgb, seg, colours = _paint_objects(label, size, config.colour_jitter, config.palette_swap, obj_rng)

    shortcut_rng = _rng(config, split, _STREAM_SHORTCUTS if correlated else _STREAM_DECORRELATED)
    watermark, kind = _shortcuts(config, label, correlated, shortcut_rng)
    backdrop = _paint_backgrounds(kind, size, _rng(config, split, _STREAM_TEXTURES))

    rgb = np.where((seg > 0)[..., None], obj_rgb, backdrop)
    _paint_watermarks(rgb, seg, colours, watermark, config.watermark_text, shortcut_rng)
    return SyntheticImages(
        images=rgb,
        segments=seg,
        label=label,
        background_kind=kind,
        watermark=watermark,
        backdrop=backdrop,
        colours=colours,
        split=split,
        correlated=correlated,
    )


def make_splits(config: DataConfig) -> dict[str, SyntheticImages]:
    """All four splits: ``train``, ``train_control`` (decorrelated), ``test`` and ``ood``."""
    return {
        "train": make_split(config, "train"),
        "train_control": make_split(config, "train", correlated=False),
        "test": make_split(config, "test"),
        "ood": make_split(config, "ood"),
    }
