"""The procedural *shapes* data set: the book's default data for every chapter.

Nine categories of textured shapes on a textured background. A category is defined by its
shape alone (colour and texture are drawn independently of it), so a network must look at
outlines, holes, corners and thin parts. The categories fall into two disjoint groups, A and
B, that pair look-alikes across groups (circle/square, ring/frame, triangle/star, cross/bar),
like the VOC / non-VOC split of *Learning to Segment Every Thing* (Hu et al., CVPR 2018).

How an image is made (:func:`render`):

1. One ``numpy.random.Generator`` per image, seeded by ``(seed, split, index)``, so an image
   never depends on worker count, order or global random state.
2. Everything is rasterised on a grid twice as fine as the image (2x2 supersampling, samples
   at sub-pixel centres). Shapes are painted in order (painter's algorithm) into an *owner
   map* that records which instance is visible at each sample.
3. A pixel's colour is the mean of its 4 samples (anti-aliased edges, so sub-pixel positions
   show); its owner is the owner of most of its samples, ties going to the top-most.
   Instance masks are ``owner == k``: disjoint, and the semantic label agrees exactly.
4. A new shape is rejected if it would leave an earlier instance with less than
   :data:`MIN_VISIBLE_FRACTION` of its own area, or a few pixels: nothing is fully hidden.
5. In about 5% of images a cluster of small same-category shapes is one ``iscrowd=1``
   annotation, as in COCO.
6. The semantic label marks a void band (255) on the lower side of every owner boundary, as in VOC.

Per-pixel tests use only IEEE-exact float64 arithmetic (+, -, *, /, sqrt); values that pass
through ``exp``/``sin``/``cos`` are computed once per shape and rounded to a 2**-30 grid, so a
last-bit difference between two machines' maths libraries cannot flip a pixel in practice.

On disk (``generate``) the layout mirrors COCO and VOC::

    root/meta.json
    root/{train,val}/images/000000.png     RGB
    root/{train,val}/labels/000000.png     palette PNG: 0 background, 1..9 classes, 255 void
    root/{train,val}/instances.json        COCO format, compressed RLE masks
"""
from __future__ import annotations

import colorsys
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
from filelock import FileLock
from PIL import Image
from tqdm.auto import tqdm

from .._checks import check_choice, check_int, describe
from ..metrics.coco import encode_masks
from .png import atomic_write, voc_palette, write_png

__all__ = [
    "ATTRIBUTE_CATEGORIES",
    "ATTRIBUTE_COLOURS",
    "ATTRIBUTE_GROUPS",
    "ATTRIBUTE_HANDLE_IN_MASK",
    "ATTRIBUTE_MASK_ORDER",
    "ATTRIBUTE_MIN_RADIUS",
    "ATTRIBUTE_OUTLINES",
    "ATTRIBUTE_TEXTURES",
    "CATEGORIES",
    "GROUPS",
    "HANDLE_IN_MASK",
    "FORMAT_VERSION",
    "MIN_IMAGE_SIZE",
    "MIN_VISIBLE_FRACTION",
    "Rendered",
    "area_ranges",
    "default_root",
    "ensure_shapes",
    "generate",
    "render",
    "statistics",
    "variant_folder",
    "verify",
    "write_checksums",
]

GENERATOR = "segnotes.data.shapes"
FORMAT_VERSION = 1
MIN_IMAGE_SIZE = 64  # sizes scale with the image: at 64 px, arms are 1.5-2 px and the smallest holes ~3 px across
MIN_VISIBLE_FRACTION = 0.35  # an instance keeps at least this share of its unoccluded area
MIN_VISIBLE_PIXELS = 6.0  # ...and at least this many pixels at 128 px (scaled with the image area, >= 4)
SPLITS = ("train", "val")  # the position is the split's spawn key: never reorder
CROWD_PROBABILITY = 0.05
INSTANCES_PER_IMAGE = (3, 8)  # non-crowd instances wanted per image, inclusive
VOID = 255

# (id, name, supercategory, group, circumradius range in pixels at 128 px). Identity is the shape.
# Ranges give areas from about 16 to 2000 px^2 (log-uniform), so COCO's small, medium and large
# (54.6 and 491.5 px^2 at 128 px) all get a good share; lower ends keep holes and spikes visible.
# Thin shapes stay small or medium, as thin things do.
_SPECS = (
    (1, "circle", "round", "A", (2.0, 31.0)),
    (2, "ring", "holed", "A", (4.0, 35.0)),
    (3, "square", "polygon", "B", (2.5, 38.0)),
    (4, "frame", "holed", "B", (5.0, 42.0)),
    (5, "triangle", "polygon", "A", (3.2, 44.0)),
    (6, "star", "concave", "B", (4.5, 44.0)),
    (7, "crescent", "concave", "A", (4.0, 44.0)),
    (8, "cross", "thin", "A", (3.0, 28.0)),
    (9, "bar", "thin", "B", (3.5, 48.0)),
)
CATEGORIES = [dict(id=i, name=n, supercategory=s, group=g) for i, n, s, g, _ in _SPECS]
"""The 9 categories as COCO category dicts (id, name, supercategory, group). A copy: editing it changes nothing."""
GROUPS = {"A": tuple(i for i, *_, g, _ in _SPECS if g == "A"), "B": tuple(i for i, *_, g, _ in _SPECS if g == "B")}
"""Disjoint category-id groups for partially supervised training: ``{"A": (1, 2, 5, 7, 8), "B": (3, 4, 6, 9)}``."""

# With ``handles=True`` every object carries a same-coloured handle (a short bar sticking out of it).
# Its box always covers the handle; whether the handle belongs to the *mask* is the category's
# convention, as a mug's handle belongs to the mug. Categories of one supercategory share the rule,
# and every supercategory but "round" has one category in each group, so each box-only category has
# a look-alike mask category with the same rule in the other group (the LSE chapter's data).
HANDLE_IN_MASK = {1: True, 2: True, 3: False, 4: True, 5: False, 6: False, 7: False, 8: True, 9: True}
"""Category id -> does the handle belong to the instance mask (``handles=True`` data sets only)."""

_NAMES = tuple(name for _, name, *_ in _SPECS)


def _outline_radii(name: str) -> tuple[float, float]:
    """The circumradius range (pixels at 128 px) of the category called ``name``."""
    return _SPECS[_NAMES.index(name)][4]


# The attributes variant (``attributes=True``): 50 categories, each a combination of three attributes that
# a detector must all see to name it: an outline, a colour family and a texture. With handles, whether the
# handle belongs to the mask follows the outline alone (a rule a transfer function can learn from the mask
# classes and carry to box-only ones). Group B, fixed, holds 10 categories: every outline and every colour
# twice, each texture five times. Group A holds the other 40, in an order (ATTRIBUTE_MASK_ORDER) whose first
# 5, 10, 20 and 40 are balanced the same way: the mask classes of the LSE chapter's curve.
ATTRIBUTE_OUTLINES = ("circle", "ring", "square", "triangle", "star")
ATTRIBUTE_COLOURS = ("red", "yellow", "green", "blue", "magenta")
ATTRIBUTE_TEXTURES = ("plain", "striped")
# look-alike outlines get opposite rules (circle/ring, square/triangle), so a rough look does not decide
_OUTLINE_HANDLE_IN_MASK = {"circle": True, "ring": False, "square": True, "triangle": False, "star": True}
_HUES = {"red": 0.0, "yellow": 55.0, "green": 125.0, "blue": 225.0, "magenta": 300.0}  # centre, degrees
_HUE_SPREAD = 20.0  # a colour family's hues span +-10 degrees around its centre
ATTRIBUTE_MIN_RADIUS = 6.0  # pixels at 128 px: stripes (3-9 px) and colour must show on every object
_STRIPE_SHADE = 0.4  # a striped object's second colour is its first, this much as bright


def _attribute_id(outline: int, colour: int, texture: int) -> int:
    return 1 + 10 * outline + 2 * colour + texture


def _transversal(shift: int, parity: int) -> tuple[int, ...]:
    """Five categories with every outline and every colour once: outline o, colour o + shift, texture o + parity."""
    return tuple(_attribute_id(o, (o + shift) % 5, (o + parity) % 2) for o in range(5))


# The 10 transversals (shift 0..4, parity 0..1) partition the 50 categories. Pairs with opposite parity
# hold each texture five times.
_B_TRANSVERSALS = ((0, 0), (2, 1))
_A_TRANSVERSALS = ((1, 0), (3, 1), (4, 0), (0, 1), (2, 0), (1, 1), (3, 0), (4, 1))


def _attribute_categories() -> list[dict]:
    b_ids = {i for t in _B_TRANSVERSALS for i in _transversal(*t)}
    categories = []
    for o, outline in enumerate(ATTRIBUTE_OUTLINES):
        for c, colour in enumerate(ATTRIBUTE_COLOURS):
            for t, texture in enumerate(ATTRIBUTE_TEXTURES):
                i = _attribute_id(o, c, t)
                categories.append(dict(
                    id=i, name=f"{colour} {texture} {outline}", supercategory=outline, group="B" if i in b_ids else "A",
                    outline=outline, colour=colour, texture=texture,
                ))
    return categories


ATTRIBUTE_CATEGORIES = _attribute_categories()
"""The attributes variant's 50 categories as COCO category dicts (id, name, supercategory = outline, group,
outline, colour, texture). ``id = 1 + 10 * outline + 2 * colour + texture`` (indices into the tuples above)."""
ATTRIBUTE_MASK_ORDER = tuple(i for t in _A_TRANSVERSALS for i in _transversal(*t))
"""Group A's 40 category ids in the order the LSE curve adds mask classes: the first 5 hold every outline and
colour once; the first 10, 20 and 40 every outline and colour 2, 4 and 8 times and each texture equally often."""
ATTRIBUTE_GROUPS = {
    "A": tuple(sorted(ATTRIBUTE_MASK_ORDER)),
    "B": tuple(sorted(i for t in _B_TRANSVERSALS for i in _transversal(*t))),
}
"""The attributes variant's groups: ``{"A": 40 ids, "B": 10 ids}``, disjoint, sorted."""
ATTRIBUTE_HANDLE_IN_MASK = {c["id"]: _OUTLINE_HANDLE_IN_MASK[c["outline"]] for c in ATTRIBUTE_CATEGORIES}
"""Category id -> does the handle belong to the mask (attributes variant with handles): the outline's rule."""
_ATTRIBUTES_BY_ID = {c["id"]: c for c in ATTRIBUTE_CATEGORIES}
_LABEL_LIMIT = 1 << 12  # owner labels stay below this, so count * limit + label orders votes
_QUANTUM = 2.0**30


# ----------------------------------------------------------------------------------------------
# Small helpers


def _q(x: float) -> float:
    """Round a libm result to a 2**-30 grid, so 1-ulp differences between platforms vanish."""
    return round(x * _QUANTUM) / _QUANTUM


def _unit(degrees: float) -> tuple[float, float]:
    """(cos, sin) of a fixed angle, rounded with :func:`_q`."""
    radians = math.radians(degrees)
    return _q(math.cos(radians)), _q(math.sin(radians))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A draw whose logarithm is uniform in [log low, log high), rounded with :func:`_q`."""
    return _q(low * math.exp(rng.random() * math.log(high / low)))


def area_ranges(image_size: int = 128) -> dict[str, tuple[float, float]]:
    """COCO's small/medium/large area ranges, scaled to a square image of side ``image_size``.

    COCO calls a mask small below 32**2 pixels and large above 96**2, in images of about
    640x480. Here the thresholds are the same *fractions of the image area*:
    ``s = 32**2 * image_size**2 / (640 * 480)``, likewise ``m`` with 96. At 128 px,
    s = 54.6 and m = 491.5 pixels.

    Returns:
        dict: ``{"all": (0, inf), "small": (0, s), "medium": (s, m), "large": (m, inf)}``,
        in the ``name -> (lo, hi)`` form the metrics take.
    """
    check_int("area_ranges", "image_size", image_size, minimum=1)
    small = 32**2 * image_size**2 / (640 * 480)
    medium = 96**2 * image_size**2 / (640 * 480)
    return {"all": (0.0, math.inf), "small": (0.0, small), "medium": (small, medium), "large": (medium, math.inf)}


# ----------------------------------------------------------------------------------------------
# Shapes: parameters, inside tests in the shape's own frame, and extents


class _Shape(NamedTuple):
    """One drawn shape. Local coordinates: u = c*dx + s*dy, v = -s*dx + c*dy, (dx, dy) from the centre."""

    category_id: int
    cx: float
    cy: float
    cos: float
    sin: float
    radius: float  # circumradius, pixels
    params: tuple  # category-specific, pixels or ratios
    handle: tuple | None = None  # (cos, sin, start, end, half_width): a bar along that local direction
    outline: str = ""  # the outline's name when it is not the category's (the attributes variant)


def _outline_name(shape: _Shape) -> str:
    """The shape's outline: its own in the attributes variant, else its category's name."""
    return shape.outline or _NAMES[shape.category_id - 1]


def _convex(u: np.ndarray, v: np.ndarray, vertices) -> np.ndarray:
    """Inside test for a convex polygon with counter-clockwise ``vertices`` (boundary included)."""
    inside = np.ones(u.shape, bool)
    for (ax, ay), (bx, by) in zip(vertices, vertices[1:] + vertices[:1]):
        inside &= (bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0
    return inside


def _polygon(radius: float, angles, radii=None) -> list[tuple[float, float]]:
    """Vertices at fixed angles (degrees) and radii (default: all ``radius``)."""
    radii = radii or [radius] * len(angles)
    return [(r * c, r * s) for r, (c, s) in zip(radii, map(_unit, angles))]


def _star_points(radius: float, inner: float) -> list[tuple[float, float]]:
    """The 10 vertices of a 5-point star, counter-clockwise, starting at the top spike."""
    return _polygon(radius, [90 + 36 * j for j in range(10)], [radius, inner] * 5)


def _inside_local(shape: _Shape, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Is each sample (u, v), in the shape's frame, inside the shape?"""
    r, p, name = shape.radius, shape.params, _outline_name(shape)
    if name in ("circle", "ring", "crescent"):
        d2 = u * u + v * v
        if name == "circle":
            return d2 <= r * r
        if name == "ring":
            return (d2 <= r * r) & (d2 >= p[0] * p[0])
        cut_radius, offset = p  # a disc minus an offset disc; the horns point along +u
        return (d2 <= r * r) & ((u - offset) * (u - offset) + v * v > cut_radius * cut_radius)
    au, av = np.abs(u), np.abs(v)
    if name in ("square", "frame"):
        half, chebyshev = r / math.sqrt(2.0), np.maximum(au, av)
        return (chebyshev <= half) & (chebyshev >= (p[0] if name == "frame" else 0.0))
    if name in ("cross", "bar"):
        half_width = p[0]
        along = (au <= r) & (av <= half_width)
        return along | ((av <= r) & (au <= half_width)) if name == "cross" else along
    if name == "triangle":
        return _convex(u, v, _polygon(r, [90, 210, 330]))
    points = _star_points(r, p[0])  # star = inner pentagon + 5 spike triangles (all convex)
    inside = _convex(u, v, points[1::2])
    for j in range(0, 10, 2):
        inside |= _convex(u, v, [points[j - 1], points[j], points[j + 1]])
    return inside


def _outline(shape: _Shape) -> list[tuple[float, float]] | None:
    """Local points whose rotated extent bounds the shape, or None for round shapes."""
    r, name = shape.radius, _outline_name(shape)
    if name in ("square", "frame"):
        h = r / math.sqrt(2.0)
        return [(h, h), (-h, h), (-h, -h), (h, -h)]
    if name == "triangle":
        return _polygon(r, [90, 210, 330])
    if name == "star":
        return _star_points(r, shape.params[0])[0::2]
    if name in ("cross", "bar"):
        w = shape.params[0]
        points = [(r, w), (-r, w), (-r, -w), (r, -w)]
        return points + [(y, x) for x, y in points] if name == "cross" else points
    return None


def _half_extent(shape: _Shape) -> tuple[float, float]:
    """Half width and half height of the rotated shape's axis-aligned bounding box (pixels)."""
    points = _outline(shape)
    if points is None:
        if shape.handle is None:
            return shape.radius, shape.radius
        r = shape.radius  # a round shape's extent is r whatever the rotation; the handle may reach further
        points = [(r, 0.0), (-r, 0.0), (0.0, r), (0.0, -r)]
        points = [(x * shape.cos + y * shape.sin, y * shape.cos - x * shape.sin) for x, y in points]
    if shape.handle is not None:
        points = points + _handle_corners(shape.handle)
    c, s = shape.cos, shape.sin
    # inverse of the sample rotation: dx = c*u - s*v, dy = s*u + c*v
    return max(abs(c * u - s * v) for u, v in points), max(abs(s * u + c * v) for u, v in points)


def _handle_corners(handle: tuple) -> list[tuple[float, float]]:
    """The four local corners of a handle ``(cos, sin, start, end, half_width)``."""
    hc, hs, start, end, w = handle
    return [(t * hc - a * hs, t * hs + a * hc) for t in (start, end) for a in (-w, w)]


def _inside_handle(handle: tuple, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Is each local sample (u, v) inside the handle bar?"""
    hc, hs, start, end, w = handle
    along, across = hc * u + hs * v, hc * v - hs * u
    return (along >= start) & (along <= end) & (np.abs(across) <= w)


def _draw_handle(rng, shape: _Shape, scale: float) -> tuple:
    """A handle for ``shape``: a bar from inside the shape to beyond its edge, in a random direction.

    The direction is redrawn until its ray from the centre meets the shape (a crescent's cut side
    does not). The bar starts at 70% of the distance to the farthest inside point along the ray
    (so it overlaps the shape's rim, past any hole) and sticks out by 50-80% of the radius (at
    least 4 px at 128 px); it is 34-46% of the radius wide, and at least 2.5-4 px at 128 px. A
    first version with 2-3.5 px handles (13% of an object on average) was too subtle: after the
    LSE chapter's 1000 training steps even a class-specific mask head trained on every class's
    masks had not learned which categories keep their handle.
    """
    steps = np.linspace(0.0, shape.radius, 129)
    for _ in range(20):
        angle = 2 * math.pi * rng.random()
        hc, hs = _q(math.cos(angle)), _q(math.sin(angle))
        inside = _inside_local(shape, hc * steps, hs * steps)
        if inside.any():
            break
    edge = float(steps[np.flatnonzero(inside)[-1]])
    length = max(4.0 * scale, (0.5 + 0.3 * rng.random()) * shape.radius)
    half_width = max(scale * (1.25 + 0.75 * rng.random()), (0.17 + 0.06 * rng.random()) * shape.radius)
    return (hc, hs, _q(0.7 * edge), _q(edge + length), _q(half_width))


def _shape_params(rng: np.random.Generator, name: str, radius: float, scale: float) -> tuple:
    """Outline-specific parameters in pixels: hole size, star's inner radius, cut disc, half width."""
    if name == "ring":
        return ((0.4 + 0.2 * rng.random()) * radius,)  # hole radius
    if name == "frame":
        return ((0.4 + 0.2 * rng.random()) * radius / math.sqrt(2.0),)  # hole half side
    if name == "star":
        return ((0.4 + 0.1 * rng.random()) * radius,)  # inner radius
    if name == "crescent":
        return ((0.7 + 0.15 * rng.random()) * radius, (0.35 + 0.2 * rng.random()) * radius)  # cut radius, offset
    if name in ("cross", "bar"):
        return (scale * (1.5 + 0.5 * rng.random()),)  # half width: 3-4 px wide at 128 px
    return ()


def _draw_shape(rng, category_id, image_size, radius_range=None, centre=None, handle=False, outline="") -> _Shape:
    """A random shape of ``category_id``: size, rotation, parameters, and a position inside the image.

    ``radius_range`` (pixels at 128 px) overrides the category's; ``centre`` = (x, y, spread)
    places the shape within ``spread`` of (x, y) instead of anywhere; ``handle`` adds a handle
    (drawn after the other parameters, so shapes without one use the same random numbers as before);
    ``outline`` names the outline when it is not the category's (the attributes variant).
    """
    scale = image_size / 128
    name = outline or _NAMES[category_id - 1]
    low, high = radius_range or _outline_radii(name)
    radius = _log_uniform(rng, low * scale, high * scale)
    angle = 2 * math.pi * rng.random()
    cos, sin = _q(math.cos(angle)), _q(math.sin(angle))
    shape = _Shape(category_id, 0.0, 0.0, cos, sin, radius, _shape_params(rng, name, radius, scale), outline=outline)
    if handle:
        shape = shape._replace(handle=_draw_handle(rng, shape, scale))
    ex, ey = _half_extent(shape)
    if centre is None:  # anywhere, wholly inside the image
        cx = ex + 0.5 + rng.random() * (image_size - 2 * ex - 1.0)
        cy = ey + 0.5 + rng.random() * (image_size - 2 * ey - 1.0)
    else:  # crowd members: near a given point, clamped inside the image
        cx = min(max(centre[0] + (2 * rng.random() - 1) * centre[2], ex + 0.5), image_size - ex - 0.5)
        cy = min(max(centre[1] + (2 * rng.random() - 1) * centre[2], ey + 0.5), image_size - ey - 0.5)
    return shape._replace(cx=cx, cy=cy)


def _rasterise(shape: _Shape, image_size: int):
    """Inside test on the 2x sample grid, within the shape's bounding box.

    Returns:
        (slice, slice): rows and columns of the 2x grid, starting and ending on even indices
            so they cover whole pixels.
        ndarray[2h, 2w] (bool): inside (the handle included).
        ndarray[2h, 2w] (float64) twice: dx, dy of each sample from the centre (pixels).
        ndarray[2h, 2w] (bool) or None: inside the handle but not the shape (None: no handle).
    """
    ex, ey = _half_extent(shape)
    x0, x1 = max(math.floor(shape.cx - ex), 0), min(math.ceil(shape.cx + ex), image_size)
    y0, y1 = max(math.floor(shape.cy - ey), 0), min(math.ceil(shape.cy + ey), image_size)
    # sample centres of the 2x grid: (j + 0.5) / 2, exact in binary
    dx = (np.arange(2 * x0, 2 * x1) + 0.5) * 0.5 - shape.cx
    dy = (np.arange(2 * y0, 2 * y1) + 0.5) * 0.5 - shape.cy
    dx, dy = np.broadcast_arrays(dx[None, :], dy[:, None])
    u = shape.cos * dx + shape.sin * dy
    v = shape.cos * dy - shape.sin * dx
    window = (slice(2 * y0, 2 * y1), slice(2 * x0, 2 * x1))
    inside = _inside_local(shape, u, v)
    if shape.handle is None:
        return window, inside, dx, dy, None
    handle_only = _inside_handle(shape.handle, u, v) & ~inside
    return window, inside | handle_only, dx, dy, handle_only


def _majority_owner(owner2x: np.ndarray) -> np.ndarray:
    """Each pixel's owner: the label held by most of its 4 samples, ties to the top-most (largest).

    Args:
        owner2x (ndarray[2H, 2W], int): labels on the 2x grid, painted in increasing order.

    Returns:
        ndarray[H, W] (int32).
    """
    quads = [owner2x[i::2, j::2].astype(np.int32) for i in (0, 1) for j in (0, 1)]
    best = None
    for candidate in quads:
        votes = sum((q == candidate).astype(np.int32) for q in quads)
        key = votes * _LABEL_LIMIT + candidate  # more votes first, then the later-painted label
        best = key if best is None else np.maximum(best, key)
    return best % _LABEL_LIMIT


def _alone_area(inside: np.ndarray) -> int:
    """Pixels a shape owns when nothing covers it: at least 2 of 4 samples (ties go to the shape)."""
    counts = sum(inside[i::2, j::2].astype(np.int32) for i in (0, 1) for j in (0, 1))
    return int((counts >= 2).sum())


# ----------------------------------------------------------------------------------------------
# Appearance: background and object textures, with a minimum contrast


_TEXTURES = ("solid", "stripes", "checker", "speckle", "gradient")
_TWO_COLOUR = ("stripes", "checker", "gradient")
_MIN_CONTRAST = 70.0  # RGB distance between an object's colours and the mean colour behind it
_MIN_TEXTURE_CONTRAST = 40.0  # between a two-colour texture's colours, so the texture shows
_COLOUR_TRIES = 30


def _parity(x: np.ndarray) -> np.ndarray:
    """floor(x) mod 2, as bool (True where odd)."""
    f = np.floor(x)
    return f - 2.0 * np.floor(0.5 * f) == 1.0


def _texture(rng, kind, colours, dx, dy, scale, extent):
    """Colours [n, 3] (float64) of the samples at offsets ``dx``, ``dy`` [n] from the shape's centre."""
    c1, c2 = colours
    if kind == "solid":
        return np.broadcast_to(c1, (dx.size, 3)).copy()
    if kind == "speckle":
        amplitude = 20.0 + 25.0 * rng.random()
        noise = amplitude * (2.0 * rng.random(dx.size) - 1.0)  # luminance noise, one draw per sample
        return np.clip(c1[None, :] + noise[:, None], 0.0, 255.0)
    angle = 2 * math.pi * rng.random()
    ca, sa = _q(math.cos(angle)), _q(math.sin(angle))
    along, across = ca * dx + sa * dy, ca * dy - sa * dx
    if kind == "gradient":
        t = np.clip(along / (2.0 * extent) + 0.5, 0.0, 1.0)[:, None]
        return c1[None, :] + (c2 - c1)[None, :] * t
    if kind == "stripes":
        period = scale * (3.0 + 6.0 * rng.random())
        second = _parity(along / period + rng.random())
    else:  # checker
        cell = scale * (2.5 + 3.5 * rng.random())
        second = _parity(along / cell + rng.random()) ^ _parity(across / cell + rng.random())
    return np.where(second[:, None], c2[None, :], c1[None, :])


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two RGB colours (no BLAS, whose fused multiply-adds vary by machine)."""
    d = a - b
    return math.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])


def _pick_colours(rng, kind, behind):
    """Two random colours (float64 [3] each), retried until they stand out from ``behind``."""
    best, best_margin = None, -math.inf
    for _ in range(_COLOUR_TRIES):
        c1, c2 = 255.0 * rng.random(3), 255.0 * rng.random(3)
        margins = [_distance(c1, behind) / _MIN_CONTRAST]
        if kind in _TWO_COLOUR:
            margins += [_distance(c2, behind) / _MIN_CONTRAST, _distance(c1, c2) / _MIN_TEXTURE_CONTRAST]
        margin = min(margins)
        if margin > best_margin:
            best, best_margin = (c1, c2), margin
        if margin >= 1.0:
            break
    return best


def _paint(rng, image2x, shape, window, inside, dx, dy, scale, attributes=None):
    """Paint ``shape``'s texture into ``image2x`` [2S, 2S, 3] where ``inside``.

    ``attributes``: None for a random texture and colours, or the category dict of the
    attributes variant, whose colour family and texture it paints.
    """
    region = image2x[window]
    behind = region[inside].mean(axis=0)
    if attributes is None:
        kind = _TEXTURES[rng.integers(len(_TEXTURES))]
        colours = _pick_colours(rng, kind, behind)
    else:
        kind = "stripes" if attributes["texture"] == "striped" else "solid"
        colours = _pick_family_colour(rng, attributes["colour"], behind)
    region[inside] = _texture(rng, kind, colours, dx[inside], dy[inside], scale, shape.radius)


def _pick_family_colour(rng, family: str, behind: np.ndarray):
    """A colour of ``family`` (float64 [3]) and its darker shade, retried until it stands out from ``behind``.

    Hue within +-10 degrees of the family's, saturation 0.7-1 and value 0.6-1: a family stays
    recognisable whatever the draw. ``colorsys`` uses only +, -, *, / and ``int``: exact everywhere.
    """
    best, best_margin = None, -math.inf
    for _ in range(_COLOUR_TRIES):
        hue = ((_HUES[family] + _HUE_SPREAD * (rng.random() - 0.5)) / 360.0) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, 0.7 + 0.3 * rng.random(), 0.6 + 0.4 * rng.random())
        c1 = 255.0 * np.asarray(rgb)
        margin = _distance(c1, behind) / _MIN_CONTRAST
        if margin > best_margin:
            best, best_margin = (c1, _STRIPE_SHADE * c1), margin
        if margin >= 1.0:
            break
    return best


def _smooth_noise(rng, side: int, cells: int) -> np.ndarray:
    """Value noise: uniform values on a (cells+1)^2 lattice, bilinearly interpolated to [side, side]."""
    lattice = rng.random((cells + 1, cells + 1))
    t = (np.arange(side) + 0.5) * (cells / side)
    i = np.minimum(np.floor(t).astype(np.int64), cells - 1)
    f = t - i
    rows = lattice[i] * (1.0 - f)[:, None] + lattice[i + 1] * f[:, None]  # [side, cells + 1]
    return rows[:, i] * (1.0 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _background(rng, image_size: int, grey: bool = False) -> np.ndarray:
    """A low-contrast textured background on the 2x grid: float64 [2S, 2S, 3] in [0, 255].

    Two nearby colours mixed by a field in [0, 1]: stripes, a linear gradient or smooth
    blotches, plus a little per-sample grain so that no region is flat. ``grey``: nearly grey
    colours (the attributes variant, whose objects' colour families must stand out).
    """
    scale, side = image_size / 128, 2 * image_size
    if grey:
        base = 30.0 + 195.0 * rng.random() + 16.0 * (rng.random(3) - 0.5)
    else:
        base = 30.0 + 195.0 * rng.random(3)
    other = np.clip(base + 80.0 * (rng.random(3) - 0.5), 0.0, 255.0)  # within +-40 per channel
    coords = (np.arange(side) + 0.5) * 0.5 - image_size / 2  # sample offsets from the centre
    kind = ("stripes", "gradient", "blotches")[rng.integers(3)]
    if kind == "blotches":
        field = _smooth_noise(rng, side, cells=int(rng.integers(3, 9)))
    else:
        angle = 2 * math.pi * rng.random()
        along = _q(math.cos(angle)) * coords[None, :] + _q(math.sin(angle)) * coords[:, None]
        if kind == "stripes":
            field = _parity(along / (scale * (6.0 + 14.0 * rng.random())) + rng.random()).astype(np.float64)
        else:
            field = np.clip(along / (image_size * math.sqrt(2.0)) + 0.5, 0.0, 1.0)
    field = field[:, :, None]
    grain = 6.0 * (2.0 * rng.random((side, side, 1)) - 1.0)
    pixels = base + (other - base) * field + grain
    return np.clip(pixels, 0.0, 255.0, out=pixels)


# ----------------------------------------------------------------------------------------------
# Rendering one image


class Rendered(NamedTuple):
    """One rendered image with its annotations (see :func:`render`)."""

    image: np.ndarray  # [S, S, 3] uint8
    owners: np.ndarray  # [S, S] int32: 0 background, k = annotation k (1-based, painting order)
    label: np.ndarray  # [S, S] uint8: 0 background, category ids, 255 void
    category_ids: tuple  # per annotation
    iscrowd: tuple  # per annotation, 0 or 1
    full_areas: tuple  # per annotation: pixels it would own with nothing on top
    handles: np.ndarray | None = None  # [S, S] bool: pixels of a handle (None: drawn without handles)
    handle_in_mask: tuple | None = None  # per annotation: does its mask hold its handle (None: without handles)


class _Canvas:
    """The state of an image being painted: 2x owner map and colours, per-label areas.

    With handles, areas and the visibility rules count only the shapes' bodies (not their handles),
    so a mask that leaves out its handle still keeps 35% of its body.
    """

    def __init__(self, rng, image_size, handles=False, attributes=False):
        self.size = image_size
        self.categories = _ATTRIBUTES_BY_ID if attributes else None  # id -> category dict, attributes variant
        self.handle_rule = ATTRIBUTE_HANDLE_IN_MASK if attributes else HANDLE_IN_MASK
        self.scale = image_size / 128
        self.min_pixels = max(4.0, MIN_VISIBLE_PIXELS * self.scale**2)
        self.owner2x = np.zeros((2 * image_size, 2 * image_size), np.int32)
        self.handle2x = np.zeros((2 * image_size, 2 * image_size), bool) if handles else None
        self.image2x = _background(rng, image_size, grey=attributes)
        self.visible = [0]  # per label (0 = background, unused): pixels owned now
        self.full = [0]  # per label: pixels owned with nothing on top
        self.category_ids, self.iscrowd = [], []

    def draw_category(self, rng) -> int:
        """A category id, uniformly: 1..9, or 1..50 in the attributes variant."""
        return int(rng.integers(1, (len(self.categories) if self.categories else len(_SPECS)) + 1))

    def outline(self, category_id: int) -> tuple[str, tuple[float, float]]:
        """The category's outline ("" for the category's own) and its radius range, pixels at 128 px."""
        if self.categories is None:
            return "", _SPECS[category_id - 1][4]
        name = self.categories[category_id]["outline"]
        low, high = _outline_radii(name)
        return name, (max(low, ATTRIBUTE_MIN_RADIUS), high)

    def paint(self, rng, shape: _Shape, painted) -> None:
        """Paint a shape that :meth:`try_add` accepted, in its category's colours in the attributes variant."""
        attributes = None if self.categories is None else self.categories[shape.category_id]
        _paint(rng, self.image2x, shape, *painted, self.scale, attributes)

    def try_add(self, shape: _Shape, label: int):
        """Paint ``shape``'s owner ``label`` if every other instance stays visible enough.

        ``label`` is the next new label, or an existing one (the crowd's, for its members).

        Returns:
            The rasterised window, inside, dx, dy (to paint colours with), or None if rejected.
        """
        window, inside, dx, dy, handle_only = _rasterise(shape, self.size)
        is_new = label == len(self.full)
        alone = _alone_area(inside if handle_only is None else inside & ~handle_only)
        if is_new and alone < self.min_pixels:
            return None
        before = self.owner2x[window]
        after = np.where(inside, label, before)
        body_before, body_after = before, after
        if self.handle2x is not None:  # count bodies only: handle samples as background
            handle_after = np.where(inside, False if handle_only is None else handle_only, self.handle2x[window])
            body_before = np.where(self.handle2x[window], 0, before)
            body_after = np.where(handle_after, 0, after)
        # only pixels in the window can change owner: update the visible areas by the difference
        count = len(self.full) + is_new
        delta = np.bincount(_majority_owner(body_after).ravel(), minlength=count) - np.bincount(
            _majority_owner(body_before).ravel(), minlength=count
        )
        visible = np.asarray(self.visible + [0] * is_new) + delta
        for other in range(1, len(self.full)):
            if other != label and visible[other] < max(MIN_VISIBLE_FRACTION * self.full[other], self.min_pixels):
                return None
        self.owner2x[window] = after
        if self.handle2x is not None:
            self.handle2x[window] = handle_after
        self.visible = visible.tolist()
        if is_new:
            self.full.append(alone)
        return window, inside, dx, dy


def _place_crowd(rng, canvas: _Canvas) -> None:
    """A cluster of 4-8 small shapes of one category, owned by one crowd annotation (label 1)."""
    category_id = canvas.draw_category(rng)
    outline, (low, _) = canvas.outline(category_id)
    spread = canvas.scale * (6.0 + 10.0 * rng.random())
    margin = spread + 2.5 * low * canvas.scale
    centre = (
        margin + rng.random() * (canvas.size - 2 * margin),
        margin + rng.random() * (canvas.size - 2 * margin),
        spread,
    )
    for _ in range(int(rng.integers(4, 9))):
        shape = _draw_shape(rng, category_id, canvas.size, (low, 2.0 * low), centre, outline=outline)
        painted = canvas.try_add(shape, label=1)
        if painted is not None:
            canvas.paint(rng, shape, painted)
    if len(canvas.full) == 1:  # no member was big enough (tiny images only): no crowd
        return
    # the region's own area is that of the union of its members
    canvas.full[1] = canvas.visible[1] = int((_majority_owner(canvas.owner2x) == 1).sum())
    canvas.category_ids.append(category_id)
    canvas.iscrowd.append(1)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The image's own generator: independent of workers, order and global state."""
    sequence = np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split), index))
    return np.random.Generator(np.random.PCG64(sequence))


def _void_band(owners: np.ndarray, width: int) -> np.ndarray:
    """Pixels with an owner painted above theirs within ``width`` pixels (a (2w+1)^2 window): bool [S, S].

    Owners are numbered in painting order (background 0), so the band lies on the lower side of every
    boundary: the background just outside an object, and an occluded object's pixels next to its occluder.
    A visible object's own outline stays labelled, which keeps 3 px arms (crosses, bars) whole; a band on
    both sides, as VOC draws it at 500 px, would leave them only a centre line at 128 px.
    """
    band = np.zeros(owners.shape, bool)
    if width == 0:
        return band
    padded = np.pad(owners, width, mode="edge")
    height, breadth = owners.shape
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            band |= padded[dy : dy + height, dx : dx + breadth] > owners
    return band


def render(
    seed: int = 0, split: str = "train", index: int = 0, image_size: int = 128, void_width: int = 1, handles: bool = False,
    attributes: bool = False,
) -> Rendered:
    """Render image ``index`` of ``split``, exactly as :func:`generate` writes it.

    Args:
        seed: the data set's seed.
        split: ``"train"`` or ``"val"``.
        index: the image's number within the split.
        image_size: side of the square image, pixels (at least :data:`MIN_IMAGE_SIZE`).
        void_width: half-width of the void band in the semantic label (0: no band).
        handles: give every (non-crowd) instance a handle, a same-coloured bar sticking out of
            it. Its box covers the handle; its mask includes the handle only if
            :data:`HANDLE_IN_MASK` says so for its category; a handle left out is void (255) in
            the semantic label. Without handles the output is unchanged (same random numbers).
        attributes: the many-category variant: 50 categories (:data:`ATTRIBUTE_CATEGORIES`), each an
            outline, a colour family and a texture, on nearly grey backgrounds; objects at least
            :data:`ATTRIBUTE_MIN_RADIUS` px. With handles, :data:`ATTRIBUTE_HANDLE_IN_MASK` (the outline's
            rule) decides whether a handle belongs to the mask.

    Returns:
        Rendered: ``image`` (ndarray[S, S, 3], uint8), ``owners`` (ndarray[S, S], int32: 0 for
        background, k for the k-th annotation, handles included), ``label`` (ndarray[S, S],
        uint8: class ids, 255 void), per annotation ``category_ids``, ``iscrowd`` and
        ``full_areas``, ``handles`` (ndarray[S, S], bool: handle pixels; None without handles) and
        ``handle_in_mask`` (per annotation; None without handles).
    """
    fn = "render"
    check_int(fn, "seed", seed, minimum=0)
    check_choice(fn, "split", split, SPLITS)
    check_int(fn, "index", index, minimum=0)
    check_int(fn, "image_size", image_size, minimum=MIN_IMAGE_SIZE)
    check_int(fn, "void_width", void_width, minimum=0)
    for name, value in (("handles", handles), ("attributes", attributes)):
        if not isinstance(value, bool):
            raise TypeError(f"{fn}: {name} must be a bool, got {describe(value)}")
    rng = _rng(seed, split, index)
    canvas = _Canvas(rng, image_size, handles, attributes)
    if rng.random() < CROWD_PROBABILITY:
        _place_crowd(rng, canvas)
    wanted = int(rng.integers(INSTANCES_PER_IMAGE[0], INSTANCES_PER_IMAGE[1] + 1))
    placed = 0
    for _ in range(12 * wanted):
        if placed == wanted:
            break
        category_id = canvas.draw_category(rng)
        outline, radii = canvas.outline(category_id)
        shape = _draw_shape(rng, category_id, image_size, radii, handle=handles, outline=outline)
        painted = canvas.try_add(shape, label=len(canvas.full))
        if painted is not None:
            canvas.paint(rng, shape, painted)
            canvas.category_ids.append(category_id)
            canvas.iscrowd.append(0)
            placed += 1
    return _finish(canvas, void_width)


def _finish(canvas: _Canvas, void_width: int) -> Rendered:
    """Average the samples into pixels; owners by majority; the semantic label with its void band."""
    quads = [canvas.image2x[i::2, j::2] for i in (0, 1) for j in (0, 1)]
    mean = (quads[0] + quads[1] + quads[2] + quads[3]) * 0.25  # fixed order: same bits everywhere
    image = np.clip(np.floor(mean + 0.5), 0, 255).astype(np.uint8)
    owners = _majority_owner(canvas.owner2x)
    classes = np.asarray([0] + canvas.category_ids, np.uint8)
    label = classes[owners]
    label[_void_band(owners, void_width)] = VOID
    handles = handle_in_mask = None
    if canvas.handle2x is not None:
        handles = _handle_pixels(canvas.owner2x, canvas.handle2x, owners)
        handle_in_mask = tuple(canvas.handle_rule[c] for c in canvas.category_ids)
        in_mask = np.asarray((True, *handle_in_mask))
        label[handles & ~in_mask[owners]] = VOID
    return Rendered(
        image, owners, label, tuple(canvas.category_ids), tuple(canvas.iscrowd), tuple(canvas.full[1:]), handles,
        handle_in_mask,
    )


def _handle_pixels(owner2x: np.ndarray, handle2x: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Pixels whose owner's samples are at least half handle samples: bool [S, S]."""
    handle_votes = np.zeros(owners.shape, np.int32)
    body_votes = np.zeros(owners.shape, np.int32)
    for i in (0, 1):
        for j in (0, 1):
            mine = (owner2x[i::2, j::2] == owners) & (owners > 0)
            handle_votes += mine & handle2x[i::2, j::2]
            body_votes += mine & ~handle2x[i::2, j::2]
    return (handle_votes > 0) & (handle_votes >= body_votes)


# ----------------------------------------------------------------------------------------------
# Writing a data set


def _annotations(rendered: Rendered) -> list[dict]:
    """COCO annotation dicts (without ids) for a rendered image: RLE, tight bbox, pixel area."""
    annotations = []
    for k, (category_id, crowd) in enumerate(zip(rendered.category_ids, rendered.iscrowd), start=1):
        owned = rendered.owners == k
        rows, cols = np.flatnonzero(owned.any(axis=1)), np.flatnonzero(owned.any(axis=0))
        # the box covers all the object owns, its handle included
        bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
        mask = owned
        extra = {}
        if rendered.handles is not None:
            handle = owned & rendered.handles
            if not rendered.handle_in_mask[k - 1]:
                mask = owned & ~rendered.handles
            extra["handle"] = encode_masks(handle)[0]  # visible handle pixels, for the LSE chapter's diagnostics
        annotations.append(
            dict(category_id=category_id, segmentation=encode_masks(mask)[0], bbox=bbox, area=int(mask.sum()), iscrowd=crowd, **extra)
        )
    return annotations


def _file_name(index: int) -> str:
    return f"{index:06d}.png"


def _make_image(job) -> list[dict]:
    """Worker: render one image, write its RGB and label PNGs, return its annotations."""
    root, seed, split, index, image_size, void_width, handles, attributes = job
    rendered = render(seed, split, index, image_size, void_width, handles, attributes)
    split_dir = Path(root) / split
    write_png(split_dir / "images" / _file_name(index), rendered.image)
    write_png(split_dir / "labels" / _file_name(index), rendered.label, palette=voc_palette())
    return _annotations(rendered)


def _dump_json(path: Path, obj, indent=None) -> None:
    """Write ``obj`` as JSON with sorted keys and fixed separators (stable bytes), atomically."""
    separators = (",", ": ") if indent else (",", ":")
    text = json.dumps(obj, sort_keys=True, indent=indent, separators=separators) + "\n"
    atomic_write(path, text.encode("utf-8"))


def _coco_categories(handles: bool = False, attributes: bool = False) -> list[dict]:
    """The data set's category dicts; with ``handles``, meta.json's carry ``handle_in_mask``."""
    if attributes:
        categories = [dict(c) for c in ATTRIBUTE_CATEGORIES]
        rule = ATTRIBUTE_HANDLE_IN_MASK
    else:
        categories = [dict(id=i, name=n, supercategory=s, group=g) for i, n, s, g, _ in _SPECS]
        rule = HANDLE_IN_MASK
    if handles:
        for category in categories:
            category["handle_in_mask"] = rule[category["id"]]
    return categories


def _meta(arguments: dict, complete: bool) -> dict:
    attributes = arguments.get("attributes", False)
    extra = dict(mask_order=list(ATTRIBUTE_MASK_ORDER)) if attributes else {}
    return dict(
        generator=GENERATOR,
        format_version=FORMAT_VERSION,
        arguments=arguments,
        categories=_coco_categories(arguments.get("handles", False), attributes),
        groups={name: list(ids) for name, ids in (ATTRIBUTE_GROUPS if attributes else GROUPS).items()},
        **extra,
        licence="CC0-1.0",
        complete=complete,
    )


def _read_meta(root: Path) -> dict | None:
    """The data set's meta.json, or None if ``root`` holds none (or not ours)."""
    try:
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == GENERATOR else None


def _existing_state(fn: str, root: Path, arguments: dict) -> str:
    """``"complete"``, ``"incomplete"`` or ``"absent"``; raises if ``root`` holds something else."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{fn}: cannot write to root '{root}': it is an existing file, not a directory")
    if not root.is_dir():
        return "absent"
    meta = _read_meta(root)
    if meta is None:
        if any(root.iterdir()):
            raise ValueError(
                f"{fn}: root '{root}' is not empty and holds no segnotes shapes data set (no valid meta.json); "
                "pass an empty or new directory"
            )
        return "absent"
    made_with = dict(format_version=meta.get("format_version"), **meta.get("arguments", {}))
    wanted = dict(format_version=FORMAT_VERSION, **arguments)
    if made_with != wanted:
        raise ValueError(
            f"{fn}: root '{root}' holds a shapes data set made with {made_with}, not the requested {wanted}; "
            "pass another root or delete this one"
        )
    return "complete" if meta.get("complete") is True else "incomplete"


def _prepare(fn: str, root: Path, arguments: dict, state: str) -> None:
    """Write meta.json with ``complete: false``, then create the directories.

    meta.json comes first, so that a folder holding anything also says whose it is.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        _dump_json(root / "meta.json", _meta(arguments, complete=False), indent=2)
        if state == "incomplete":  # ours and interrupted: start the splits afresh
            for split in SPLITS:
                shutil.rmtree(root / split, ignore_errors=True)
        for split in SPLITS:
            for sub in ("images", "labels"):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise type(error)(f"{fn}: cannot write to root '{root}': {error.strerror or error}") from error


def _check_root(fn: str, name: str, root) -> Path:
    """``root`` as a Path; an empty string is refused (``Path("")`` would be the current folder)."""
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{fn}: {name} must be a str or os.PathLike, got {describe(root)}")
    if not os.fspath(root):
        raise ValueError(f"{fn}: {name} must name a folder or file, got an empty path")
    return Path(root).expanduser()


def _check_generate_arguments(fn, root, num_train, num_val, seed, image_size, void_width, workers, progress):
    _check_root(fn, "root", root)
    check_int(fn, "num_train", num_train, minimum=0)
    check_int(fn, "num_val", num_val, minimum=0)
    check_int(fn, "seed", seed, minimum=0)
    check_int(fn, "image_size", image_size, minimum=MIN_IMAGE_SIZE)
    check_int(fn, "void_width", void_width, minimum=0)
    if workers is not None:
        check_int(fn, "workers", workers, minimum=0)
    if not isinstance(progress, bool):
        raise TypeError(f"{fn}: progress must be a bool, got {describe(progress)}")


def generate(
    root: str | os.PathLike,
    num_train: int,
    num_val: int,
    seed: int = 0,
    image_size: int = 128,
    workers: int | None = None,
    progress: bool = True,
    *,
    void_width: int = 1,
    handles: bool = False,
    attributes: bool = False,
) -> Path:
    """Generate the shapes data set under ``root`` (byte-identical for the same arguments).

    Idempotent: if ``root`` already holds a complete data set made with the same arguments,
    return at once; an incomplete one (an interrupted run) is made again. meta.json is written
    with ``"complete": false`` first and ``true`` last. Safe to call from several processes at
    once (notebooks, ``make -j``, DDP ranks): a file lock (``.<root name>.lock`` beside ``root``)
    lets one generate while the others wait, and they all return the complete data set.

    Args:
        root: directory to write; created if missing. Must be empty, new, or hold a data set
            made by this function.
        num_train: number of training images (>= 0).
        num_val: number of validation images (>= 0).
        seed: the data set's seed (>= 0); each image has its own generator from
            ``SeedSequence(seed, spawn_key=(split, index))``.
        image_size: side of the square images in pixels (>= :data:`MIN_IMAGE_SIZE` = 64).
        workers: processes to use; None: ``min(os.cpu_count(), 8)``; 0 or 1: in this process.
            Does not change the output.
        progress: show a tqdm progress bar.
        void_width: half-width of the void band (255) along boundaries in the semantic
            labels; 1 marks every pixel whose 3x3 neighbourhood holds another owner, 0 none.
        handles: the variant with handles (see :func:`render`): each annotation also holds
            ``handle``, the RLE of its visible handle pixels, and meta.json's categories say
            ``handle_in_mask``. Recorded in meta.json only when True, so folders made before this
            option existed still match.
        attributes: the many-category variant (see :func:`render`); recorded only when True. Its
            meta.json also holds ``mask_order`` (:data:`ATTRIBUTE_MASK_ORDER`).

    Returns:
        pathlib.Path: ``root``.

    Raises:
        ValueError: ``root`` is non-empty but not a shapes data set, or holds one made with
            other arguments.
        OSError (NotADirectoryError, PermissionError, ...): ``root`` cannot be written.
    """
    fn = "generate"
    _check_generate_arguments(fn, root, num_train, num_val, seed, image_size, void_width, workers, progress)
    for name, value in (("handles", handles), ("attributes", attributes)):
        if not isinstance(value, bool):
            raise TypeError(f"{fn}: {name} must be a bool, got {describe(value)}")
    root = Path(root).expanduser()
    # Only the arguments that change the files are recorded: workers and progress do not.
    arguments = dict(num_train=num_train, num_val=num_val, seed=seed, image_size=image_size, void_width=void_width)
    if handles:
        arguments["handles"] = True
    if attributes:
        arguments["attributes"] = True
    if _is_complete(root, arguments):  # the common case, and no lock file in a read-only folder
        return root
    with _generation_lock(fn, root):
        # Checked again under the lock: another process may have made the data set (or be
        # making it) while this one waited. Without the lock a second process saw its
        # "complete: false" and deleted the splits it was writing.
        state = _existing_state(fn, root, arguments)
        if state == "complete":
            return root
        _prepare(fn, root, arguments, state)
        _write_splits(root, arguments, num_train, num_val, seed, image_size, void_width, handles, attributes, workers,
                      progress)
    return root


def _is_complete(root: Path, arguments: dict) -> bool:
    """Whether ``root`` holds a complete data set made with ``arguments`` (no lock needed: meta.json
    says ``complete: true`` only once every file is in place, and is replaced atomically)."""
    meta = _read_meta(root)
    return (meta is not None and meta.get("complete") is True
            and dict(format_version=meta.get("format_version"), **meta.get("arguments", {}))
            == dict(format_version=FORMAT_VERSION, **arguments))


@contextlib.contextmanager
def _generation_lock(fn: str, root: Path):
    """Hold ``.<root name>.lock`` beside ``root`` while generating: one writer per folder.

    A file lock (``filelock``: ``flock`` on POSIX, ``msvcrt`` on Windows) is released by the
    operating system when its process dies, so a killed run never blocks the next one. The
    lock file sits beside the folder, not in it, so the folder holds only the data set.
    """
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root.parent / f".{root.name}.lock")
        lock.acquire()
    except OSError as error:
        raise type(error)(f"{fn}: cannot write to root '{root}': {error.strerror or error}") from error
    try:
        yield
    finally:
        lock.release()


def _write_splits(root: Path, arguments: dict, num_train, num_val, seed, image_size, void_width, handles, attributes,
                  workers, progress) -> None:
    """Render and write every image, then the instances files, then meta.json with ``complete: true``."""
    counts = dict(train=num_train, val=num_val)
    jobs = [
        (str(root), seed, split, i, image_size, void_width, handles, attributes) for split in SPLITS for i in range(counts[split])
    ]
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    results = _run_jobs(jobs, workers, progress)
    for split in SPLITS:
        split_results = [results.pop(0) for _ in range(counts[split])]
        _dump_json(root / split / "instances.json", _coco_file(split_results, image_size, attributes))
    _dump_json(root / "meta.json", _meta(arguments, complete=True), indent=2)


def _run_jobs(jobs: list, workers: int, progress: bool) -> list:
    """Annotations of every job, in job order, on ``workers`` processes (<= 1: this one)."""
    with tqdm(total=len(jobs), disable=not progress, desc="shapes", unit="img") as bar:
        if workers <= 1 or len(jobs) <= 1:
            results = []
            for job in jobs:
                results.append(_make_image(job))
                bar.update()
            return results
        processes = min(workers, len(jobs))
        chunk = max(1, min(16, len(jobs) // (4 * processes)))
        results = []
        with multiprocessing.get_context().Pool(processes) as pool:
            for image_annotations in pool.imap(_make_image, jobs, chunksize=chunk):
                results.append(image_annotations)
                bar.update()
        return results


def _coco_file(per_image: list[list[dict]], image_size: int, attributes: bool = False) -> dict:
    """The instances.json content: images, annotations with ids (both 1-based), categories."""
    images, annotations = [], []
    for index, image_annotations in enumerate(per_image):
        image_id = index + 1
        images.append(
            dict(id=image_id, file_name=f"images/{_file_name(index)}", width=image_size, height=image_size)
        )
        for annotation in image_annotations:
            annotations.append(dict(annotation, id=len(annotations) + 1, image_id=image_id))
    info = dict(description="segnotes procedural shapes", version=str(FORMAT_VERSION), contributor=GENERATOR)
    licences = [dict(id=1, name="CC0-1.0", url="https://creativecommons.org/publicdomain/zero/1.0/")]
    return dict(info=info, licenses=licences, images=images, annotations=annotations, categories=_coco_categories(attributes=attributes))


# ----------------------------------------------------------------------------------------------
# Checksums


def _files(root: Path, exclude: Path | None = None) -> list[str]:
    """Relative POSIX paths of every file under ``root``, sorted."""
    exclude = exclude.resolve() if exclude is not None else None
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.resolve() != exclude
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_checksums(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write ``sha256sum``-format lines (``<hex>  <relative path>``, sorted) for every file under ``root``.

    ``path`` itself is skipped if it lies under ``root``. Check later with ``verify`` or
    ``cd root && sha256sum -c path``.

    Returns:
        pathlib.Path: ``path``.
    """
    fn = "write_checksums"
    root, path = _check_root(fn, "root", root), _check_root(fn, "path", path)
    if not root.is_dir():
        raise FileNotFoundError(f"{fn}: root '{root}' is not a directory")
    if path.is_dir():
        raise IsADirectoryError(f"{fn}: path '{path}' is a directory; name the checksum file to write")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{fn}: the folder of path '{path}' does not exist")
    lines = [f"{_sha256(root / name)}  {name}\n" for name in _files(root, exclude=path)]
    return atomic_write(path, "".join(lines).encode("utf-8"))


def verify(root: str | os.PathLike, checksums: str | os.PathLike) -> int:
    """Recompute every file's SHA-256 under ``root`` and compare with the ``checksums`` file.

    Returns:
        int: the number of files checked.

    Raises:
        ValueError: listing the first few mismatched, missing and extra files.
    """
    fn = "verify"
    root, checksums = _check_root(fn, "root", root), _check_root(fn, "checksums", checksums)
    if not root.is_dir():
        raise FileNotFoundError(f"{fn}: root '{root}' is not a directory")
    if not checksums.is_file():
        what = "a directory" if checksums.is_dir() else "missing"
        raise FileNotFoundError(f"{fn}: the checksum file '{checksums}' is {what}; name a file of sha256sum lines")
    try:
        text = checksums.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{fn}: '{checksums}' is not a text file of sha256sum lines") from None
    expected = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition(" ")
        if len(digest) != 64 or not name.strip():
            raise ValueError(f"verify: line {number} of '{checksums}' is not '<sha256 hex>  <path>': {line!r}")
        expected[name.strip().lstrip("*")] = digest  # '*' marks binary mode in sha256sum's format
    present = set(_files(root, exclude=checksums))
    problems = dict(
        mismatched=sorted(n for n in expected.keys() & present if _sha256(root / n) != expected[n]),
        missing=sorted(expected.keys() - present),
        extra=sorted(present - expected.keys()),
    )
    if any(problems.values()):
        details = "; ".join(
            f"{len(names)} {kind}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
            for kind, names in problems.items()
            if names
        )
        raise ValueError(f"verify: files under '{root}' do not match '{checksums}': {details}")
    return len(expected)


# ----------------------------------------------------------------------------------------------
# Where the data lives, and its statistics


def default_root() -> Path:
    """Where the shapes data set lives by default.

    ``$SEGNOTES_DATA`` if set; else ``<repo>/data/shapes`` when the package sits in a source
    checkout (a ``pyproject.toml`` two levels above this subpackage); else
    ``~/.cache/segnotes/shapes``.
    """
    if os.environ.get("SEGNOTES_DATA"):
        return Path(os.environ["SEGNOTES_DATA"]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "data" / "shapes"
    return Path.home() / ".cache" / "segnotes" / "shapes"


def ensure_shapes(
    root: str | os.PathLike | None = None,
    num_train: int = 2000,
    num_val: int = 500,
    seed: int = 0,
    image_size: int = 128,
    progress: bool = True,
    handles: bool = False,
    attributes: bool = False,
) -> Path:
    """Generate the shapes data set unless ``root`` already holds it; return ``root``.

    Notebooks call this first (in Colab too). ``root`` defaults to :func:`default_root`, or for
    the variants of :func:`render` to a folder beside it: ``shapes_handles`` (``handles=True``),
    ``shapes_attributes`` (``attributes=True, handles=True``, the LSE chapter's curve) or
    ``shapes_attributes_plain`` (``attributes=True`` alone).
    """
    if root is None:
        root = default_root()
        if handles or attributes:
            root = root.with_name(variant_folder(handles, attributes))
    return generate(root, num_train, num_val, seed=seed, image_size=image_size, progress=progress, handles=handles,
                    attributes=attributes)


def variant_folder(handles: bool = False, attributes: bool = False) -> str:
    """The default folder name of a variant: ``shapes``, ``shapes_handles``, ``shapes_attributes`` (with
    handles) or ``shapes_attributes_plain``."""
    if attributes:
        return "shapes_attributes" if handles else "shapes_attributes_plain"
    return "shapes_handles" if handles else "shapes"


def statistics(root: str | os.PathLike | None = None) -> dict:
    """Statistics of a generated data set, per split, as the data card quotes them.

    Returns:
        dict: ``arguments`` (as in meta.json), and for each split: ``images``, ``instances``
        (non-crowd), ``instances_per_image`` (``mean``, ``max``), ``per_category`` (name ->
        non-crowd count), ``area_shares`` (small/medium/large shares of non-crowd instances,
        with :func:`area_ranges`), ``crowd`` (count), ``pixel_shares`` (background, each
        category, void: shares of all label pixels).
    """
    fn = "statistics"
    root = default_root() if root is None else _check_root(fn, "root", root)
    meta = _read_meta(root)
    if meta is None or meta.get("complete") is not True:
        raise FileNotFoundError(f"{fn}: no complete shapes data set at '{root}'")
    ranges = area_ranges(meta["arguments"]["image_size"])
    result = dict(arguments=meta["arguments"])
    for split in SPLITS:
        coco = json.loads((root / split / "instances.json").read_text(encoding="utf-8"))
        result[split] = _split_statistics(root / split, coco, ranges)
    return result


def _split_statistics(split_dir: Path, coco: dict, ranges: dict) -> dict:
    single = [a for a in coco["annotations"] if not a["iscrowd"]]
    per_image = np.bincount([a["image_id"] - 1 for a in single], minlength=len(coco["images"]))
    areas = np.asarray([a["area"] for a in single], float)
    pixels = np.zeros(256, np.int64)
    for image in coco["images"]:
        path = split_dir / image["file_name"].replace("images/", "labels/")
        try:
            with Image.open(path) as opened:
                label = np.asarray(opened)
        except OSError as error:  # missing, truncated or not an image: name the file
            raise OSError(f"statistics: cannot read the label image {path}: {error}") from error
        pixels += np.bincount(label.ravel(), minlength=256)
    total = max(int(pixels.sum()), 1)
    shares = dict(background=pixels[0] / total)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    shares.update({name: pixels[i] / total for i, name in sorted(names.items())})
    shares["void"] = pixels[VOID] / total
    n = max(len(single), 1)
    return dict(
        images=len(coco["images"]),
        instances=len(single),
        instances_per_image=dict(
            mean=float(per_image.mean()) if per_image.size else 0.0,
            max=int(per_image.max()) if per_image.size else 0,
        ),
        per_category={name: sum(a["category_id"] == i for a in single) for i, name in sorted(names.items())},
        area_shares={
            name: float(((areas >= lo) & (areas <= hi)).sum() / n)
            for name, (lo, hi) in ranges.items()
            if name != "all"
        },
        crowd=sum(a["iscrowd"] for a in coco["annotations"]),
        pixel_shares={name: float(value) for name, value in shares.items()},
    )
