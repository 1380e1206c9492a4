import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from segnotes.data import encode_png, voc_palette, write_png


def _chunks(data: bytes):
    """(type, payload) of each chunk, after the signature."""
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def test_rgb_round_trip_through_pillow():
    image = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    data = encode_png(image)
    with Image.open(io.BytesIO(data)) as loaded:
        assert loaded.mode == "RGB" and loaded.size == (11, 7)
        np.testing.assert_array_equal(np.asarray(loaded), image)
    Image.open(io.BytesIO(data)).verify()  # checks every chunk's CRC


def test_palette_round_trip_through_pillow():
    label = np.random.default_rng(1).integers(0, 10, (5, 9), dtype=np.uint8)
    label[0, :3] = 255
    palette = voc_palette()
    data = encode_png(label, palette=palette)
    with Image.open(io.BytesIO(data)) as loaded:
        assert loaded.mode == "P"
        np.testing.assert_array_equal(np.asarray(loaded), label)
        np.testing.assert_array_equal(np.asarray(loaded.getpalette(), np.uint8).reshape(-1, 3), palette)
    Image.open(io.BytesIO(data)).verify()


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    # background, aeroplane, person (15), void (255) in the VOC devkit's colour map
    assert palette[[0, 1, 15, 255]].tolist() == [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]
    assert len({tuple(c) for c in palette}) == 256
    assert voc_palette(16).tolist() == palette[:16].tolist()
    with pytest.raises(ValueError, match="voc_palette: num_colors must be <= 256"):
        voc_palette(257)


def test_layout_is_fixed_one_idat_filter_none_level_9():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = encode_png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks = _chunks(data)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert chunks[0][1] == struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0)
    raw = bytes([0]) + image[0].tobytes() + bytes([0]) + image[1].tobytes()  # filter byte 0 per row
    assert chunks[1][1] == zlib.compress(raw, 9)
    palette_chunks = _chunks(encode_png(np.zeros((2, 2), np.uint8), palette=[(1, 2, 3), (4, 5, 6)]))
    assert [kind for kind, _ in palette_chunks] == [b"IHDR", b"PLTE", b"IDAT", b"IEND"]
    assert palette_chunks[1][1] == bytes([1, 2, 3, 4, 5, 6])


def test_write_png_writes_the_encoded_bytes_and_no_leftovers(tmp_path):
    image = np.full((4, 4, 3), 200, np.uint8)
    path = write_png(tmp_path / "a.png", image)
    assert path.read_bytes() == encode_png(image)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


@pytest.mark.parametrize(
    "image, palette, error, match",
    [
        ([[1, 2]], None, TypeError, "encode_png: image must be a numpy.ndarray, got list"),
        (np.zeros((2, 2, 3), np.float32), None, TypeError, "image must have dtype uint8"),
        (np.zeros((2, 2), np.uint8), None, ValueError, r"an RGB image must have shape \(H, W, 3\)"),
        (np.zeros((2, 2, 3), np.uint8), [(0, 0, 0)], ValueError, r"a palette image must have shape \(H, W\)"),
        (np.zeros((2, 2), np.uint8), np.zeros((257, 3), int), ValueError, r"palette must have shape \(P, 3\)"),
        (np.zeros((2, 2), np.uint8), [(0, 0, 300)], ValueError, "palette must hold integers in 0..255"),
        (np.full((2, 2), 2, np.uint8), [(0, 0, 0), (1, 1, 1)], ValueError, "index 2 but the palette has only 2"),
        (np.zeros((0, 2, 3), np.uint8), None, ValueError, "image must not be empty"),
    ],
)
def test_bad_inputs(image, palette, error, match):
    with pytest.raises(error, match=match):
        encode_png(image, palette)
