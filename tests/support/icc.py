"""A matrix/TRC RGB display profile (ICC v2) written from its primaries, for the colour-management tests: Pillow can
only create sRGB, LAB and XYZ profiles, and no Display P3 profile file is on the machine (an iPhone embeds one in
every photo). The layout is the ICC specification's: a 128-byte header, a tag table, then each tag's data."""

from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)
# Display P3's primaries adapted to D50 (the PCS white), as Apple's profile gives them, and a plain gamma in place
# of its sRGB-shaped curve (the tests compute their expectation with the same gamma)
DISPLAY_P3 = {
    "red": (0.5151, 0.2412, -0.0011),
    "green": (0.2920, 0.6922, 0.0419),
    "blue": (0.1571, 0.0666, 0.7841),
}
GAMMA_U8F8 = 563  # u8Fixed8Number: 563 / 256 = 2.199


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(values: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15f16(v) for v in values)


def _curve(gamma_u8f8: int) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, gamma_u8f8) + b"\0\0"


def _desc(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(ascii_text))
        + ascii_text
        + struct.pack(">II", 0, 0)  # no Unicode description
        + struct.pack(">HB", 0, 0)
        + b"\0" * 67  # no ScriptCode description
    )


def rgb_profile(description: str = "Display P3 (test)", primaries: dict | None = None) -> bytes:
    """The bytes of an ICC v2 'mntr' RGB profile with these D50 primaries and a 2.2 gamma on each channel."""
    primaries = primaries or DISPLAY_P3
    tags = [
        (b"desc", _desc(description)),
        (b"wtpt", _xyz(D50)),
        (b"rXYZ", _xyz(primaries["red"])),
        (b"gXYZ", _xyz(primaries["green"])),
        (b"bXYZ", _xyz(primaries["blue"])),
        (b"rTRC", _curve(GAMMA_U8F8)),
        (b"gTRC", _curve(GAMMA_U8F8)),
        (b"bTRC", _curve(GAMMA_U8F8)),
        (b"cprt", b"text\0\0\0\0" + b"none\0\0\0\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 24  # platform, flags, manufacturer, model, attributes
        + struct.pack(">I", 0)  # perceptual intent
        + b"".join(_s15f16(v) for v in D50)
        + b"\0" * 48  # creator, reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data
