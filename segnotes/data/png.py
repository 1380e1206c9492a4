"""A minimal deterministic PNG writer: 8-bit RGB and palette ("P") images.

Why not Pillow? Pillow's encoder output depends on the zlib it bundles (newer wheels ship
zlib-ng), so the same pixels give different bytes on different machines, and the data set's
checksums would break. Here every choice is fixed: one IDAT chunk, filter type 0 ("None") on
every row, ``zlib.compress(level=9)`` and ``zlib.crc32``, no optional chunks. Reading back is
Pillow's job.

The format (PNG spec, ISO/IEC 15948): an 8-byte signature, then chunks, each
``length (4 bytes, big-endian) | type (4 ASCII bytes) | data | CRC-32 of type + data``:
IHDR (size, bit depth, colour type), PLTE (palette images only), IDAT (the zlib stream of the
filtered rows, each row prefixed by its filter-type byte), IEND.
"""
from __future__ import annotations

import os
import secrets
import struct
import zlib
from pathlib import Path

import numpy as np

from .._checks import check_int, describe

__all__ = ["encode_png", "write_png", "atomic_write", "voc_palette"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE_RGB = 2
_COLOUR_TYPE_PALETTE = 3


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: index i -> RGB, by interleaving i's bits (255 -> cream void).

    Bits 0, 1, 2 of each 3-bit group of i go to R, G, B, from the top bit of the colour down:
    0 is black (background), 1 (128, 0, 0), 15 (192, 128, 128) (VOC's person), 255 (224, 224, 192).

    Args:
        num_colors (int): how many indices, 1 to 256.

    Returns:
        ndarray[num_colors, 3] (uint8): a fresh array.
    """
    check_int("voc_palette", "num_colors", num_colors, minimum=1)
    if num_colors > 256:
        raise ValueError(f"voc_palette: num_colors must be <= 256 (one byte per index), got {num_colors}")
    index, palette = np.arange(num_colors), np.zeros((num_colors, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 over type and data."""
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _check_palette(fn: str, palette) -> bytes:
    """The PLTE payload for ``palette`` (up to 256 RGB triples, values 0..255)."""
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or not 1 <= array.shape[0] <= 256:
        raise ValueError(f"{fn}: palette must have shape (P, 3) with 1 <= P <= 256, got {describe(array)}")
    if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
        raise ValueError(f"{fn}: palette must hold integers in 0..255, got {describe(array)}")
    return array.astype(np.uint8).tobytes()


def encode_png(image: np.ndarray, palette=None) -> bytes:
    """Encode an 8-bit image as PNG bytes, identical on every machine with the same zlib.

    Args:
        image (ndarray[H, W, 3], uint8): an RGB image; or
            (ndarray[H, W], uint8): palette indices, with ``palette`` given.
        palette (array-like[P, 3], ints in 0..255, P <= 256): the colour of each index.
            Required for 2-D images, forbidden for RGB ones.

    Returns:
        bytes: the PNG file's contents.

    Example::

        >>> encode_png(np.zeros((2, 3), np.uint8), palette=[(0, 0, 0)])[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    fn = "encode_png"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{fn}: image must be a numpy.ndarray, got {describe(image)}")
    if image.dtype != np.uint8:
        raise TypeError(f"{fn}: image must have dtype uint8, got {describe(image)}")
    if palette is None:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{fn}: an RGB image must have shape (H, W, 3), got {describe(image)}")
        colour_type, extra = _COLOUR_TYPE_RGB, b""
    else:
        if image.ndim != 2:
            raise ValueError(f"{fn}: a palette image must have shape (H, W), got {describe(image)}")
        plte = _check_palette(fn, palette)
        if image.size and int(image.max()) >= len(plte) // 3:
            raise ValueError(
                f"{fn}: image holds index {int(image.max())} but the palette has only {len(plte) // 3} colours"
            )
        colour_type, extra = _COLOUR_TYPE_PALETTE, _chunk(b"PLTE", plte)
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"{fn}: image must not be empty, got {describe(image)}")
    # Each scanline starts with its filter-type byte; 0 means "None" (raw bytes follow).
    rows = np.ascontiguousarray(image).reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    # IHDR: width, height, bit depth 8, colour type, compression 0, filter 0, interlace 0.
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        [_SIGNATURE, _chunk(b"IHDR", header), extra, _chunk(b"IDAT", zlib.compress(raw, 9)), _chunk(b"IEND", b"")]
    )


def write_png(path: str | os.PathLike, image: np.ndarray, palette=None) -> Path:
    """Write ``image`` to ``path`` as PNG (see :func:`encode_png`), atomically.

    The bytes go to a temporary file beside ``path`` that is then renamed, so a reader never
    sees half a file.

    Returns:
        pathlib.Path: ``path``.
    """
    return atomic_write(path, encode_png(image, palette))


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it, renamed over ``path``.

    The temporary name is unique (process id and random digits), so two processes writing the
    same file never write into each other's temporary file; a reader sees the old file or the
    new one, never half of one.

    Returns:
        pathlib.Path: ``path``.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with open(partial, "xb") as f:  # "x": never reuse an existing file
            f.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
