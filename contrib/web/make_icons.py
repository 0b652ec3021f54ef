"""Draw the notification center's app icons (a bell on a rounded square).

Writes ``icon-192.png``, ``icon-512.png`` and ``icon-maskable-512.png`` into
``notifyd/web/static/icons/`` using only the standard library (zlib + struct), so
the icons can be regenerated anywhere the daemon runs:

    python contrib/web/make_icons.py

The bell is described as a few shapes in a unit square and rasterised with 4×4
supersampling for smooth edges. ``icon.svg`` next to the PNGs draws the same bell
by hand and is not generated.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "notifyd" / "web" / "static" / "icons"

BACKGROUND = (0x1D, 0x4E, 0xD8)  # the page's accent blue (#1d4ed8)
BELL = (0xFF, 0xFF, 0xFF)
SAMPLES = 4


def _in_rounded_square(x: float, y: float, radius: float) -> bool:
    """Inside the unit square with corners rounded by ``radius``."""
    cx = min(max(x, radius), 1 - radius)
    cy = min(max(y, radius), 1 - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2


def _in_bell(x: float, y: float, scale: float) -> bool:
    """The bell, centred on (0.5, 0.5); ``scale`` shrinks it for the maskable safe zone."""
    x = 0.5 + (x - 0.5) / scale
    y = 0.5 + (y - 0.5) / scale
    dx = abs(x - 0.5)
    # knob on top
    if (x - 0.5) ** 2 + (y - 0.22) ** 2 <= 0.045**2:
        return True
    # dome: the upper half of a circle
    if y <= 0.40 and (x - 0.5) ** 2 + (y - 0.40) ** 2 <= 0.17**2:
        return True
    # body: flares from the dome's width to the rim
    if 0.40 <= y <= 0.66:
        t = (y - 0.40) / 0.26
        half = 0.17 + 0.08 * t**2
        if dx <= half:
            return True
    # rim: a bar with rounded ends
    if 0.66 <= y <= 0.71 and dx <= 0.28:
        return True
    if 0.66 <= y <= 0.71 and (dx - 0.28) ** 2 + (y - 0.685) ** 2 <= 0.025**2:
        return True
    # clapper
    return (x - 0.5) ** 2 + (y - 0.76) ** 2 <= 0.06**2 and y >= 0.71


def render(size: int, *, maskable: bool = False) -> bytes:
    """RGBA rows of the icon at ``size`` × ``size`` pixels."""
    radius = 0.0 if maskable else 0.22
    scale = 0.78 if maskable else 1.0
    rows = bytearray()
    step = 1 / (size * SAMPLES)
    for py in range(size):
        rows.append(0)  # PNG filter type "None" for this row
        for px in range(size):
            bg = bell = 0
            for sy in range(SAMPLES):
                y = py / size + (sy + 0.5) * step
                for sx in range(SAMPLES):
                    x = px / size + (sx + 0.5) * step
                    if maskable or _in_rounded_square(x, y, radius):
                        bg += 1
                        if _in_bell(x, y, scale):
                            bell += 1
            n = SAMPLES * SAMPLES
            alpha = bg / n
            if bg:
                mix = bell / bg
                rgb = [
                    round(b * (1 - mix) + f * mix) for b, f in zip(BACKGROUND, BELL, strict=True)
                ]
            else:
                rgb = [0, 0, 0]
            rows.extend((*rgb, math.floor(alpha * 255 + 0.5)))
    return bytes(rows)


def png(size: int, rgba_rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rgba_rows, 9))
        + chunk(b"IEND", b"")
    )


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, size, maskable in (
        ("icon-192.png", 192, False),
        ("icon-512.png", 512, False),
        ("icon-maskable-512.png", 512, True),
    ):
        (OUT / name).write_bytes(png(size, render(size, maskable=maskable)))
        print(OUT / name)


if __name__ == "__main__":
    main()
