"""Hand-made good and bad image files for the ingest tests."""
import io
import struct
import zlib

import numpy as np
from PIL import Image


def pixels(width=64, height=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def encode(array_or_image, fmt, mode=None, **save_args) -> bytes:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(
        array_or_image)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def jpeg(width=64, height=48, seed=0, mode="RGB", quality=90) -> bytes:
    return encode(pixels(width, height, seed), "JPEG", mode=mode, quality=quality)


def png(width=64, height=48, seed=0, mode="RGB") -> bytes:
    return encode(pixels(width, height, seed), "PNG", mode=mode)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A valid-looking PNG of a few dozen bytes that declares width x height pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b""))


def png_bomb_decodable(width=14_000, height=14_000) -> bytes:
    """A complete, decodable black RGB PNG of width x height: its rows compress about 1000:1, so
    14,000 x 14,000 (196 M pixels, 588 MB decoded) is a file of about half a megabyte."""
    row = b"\x00" * (1 + 3 * width)       # filter type 0, then the row's pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header is patched to declare another size."""
    data = bytearray(jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)
