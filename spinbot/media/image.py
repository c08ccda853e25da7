"""Image input: the header checked before any decode, a decode with a clear error, and sizes for the models
(multiples of 16, aspect kept)."""

from __future__ import annotations

import functools
import io
import math
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from spinbot.errors import InputError, InputTooLarge, InputTooSmall, UnusableFile
from spinbot.media.image_layout import refuse_costly_layout
from spinbot.media.paths import check_input_file

if TYPE_CHECKING:
    from PIL.Image import Image
    from PIL.ImageCms import ImageCmsTransform

# The formats an image is read in: those OpenCV decoded when it did the decode, all plain pixels. Others Pillow
# knows stay out: ICO and ICNS pick one of several sizes, EPS and PDF run Ghostscript.
FORMATS = ("AVIF", "BMP", "GIF", "JPEG", "JPEG2000", "MPO", "PNG", "PPM", "TIFF", "WEBP")


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe_image(path: Path | str, max_pixels: int) -> ImageHeader:
    """Format and size from the file's header, refused when over max_pixels. No pixel is decoded (Pillow's open
    reads the header only), so a small file that claims 30000x30000 costs nothing here."""
    with _opened(path, max_pixels) as (_, header):
        return header


def probe_upright(path: Path | str, max_pixels: int) -> ImageHeader:
    """probe_image, with width and height as the image will stand once decoded: swapped where its EXIF orientation
    turns it a quarter (5 to 8). Only the EXIF the header holds is read: a PNG's eXIf chunk after its pixels is
    missed (Pillow decodes them to find it), so this is a size to estimate with, never one to rely on."""
    from PIL import Image

    with _opened(path, max_pixels) as (image, header):
        orientation = Image.Image.getexif(image).get(_ORIENTATION, 1)  # the base class's: no PNG decode
    if orientation in _QUARTER_TURNS:
        return ImageHeader(header.format, header.height, header.width)
    return header


def load_image(path: Path | str, max_pixels: int) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3) after its header passed the pixel limit (the caller's
    SPINBOT_MAX_IMAGE_PIXELS); anything that is not an image, or not one that decodes, is a one-line error."""
    with _opened(path, max_pixels) as (image, header):
        return _decode(image, header, path)


# A portrait's long side at most 4x its short one: wider frames are not a talking head, and past this the lite
# backends kept the aspect into frames libx264 cannot encode (a 20000x64 image failed only at the last node).
MAX_PORTRAIT_ASPECT = 4.0
# A portrait's short side at least this: a 1x1 PNG passed every check and made a video of one colour (the native
# backend enlarges it to its 480p bucket and renders it for as long as a real face). The models see a face in
# patches of 16 pixels (the VAE's 8 times its patch of 2), so under 64 there are not four across.
MIN_PORTRAIT_SIDE = 64


def load_portrait(path: Path | str, max_pixels: int) -> np.ndarray:
    """load_image for the portrait a video is made from: its size and aspect ratio checked from the header first."""
    with _opened(path, max_pixels) as (image, header):
        long_side, short_side = max(header.width, header.height), min(header.width, header.height)
        if short_side < MIN_PORTRAIT_SIDE:
            raise InputTooSmall(  # a limit, as the aspect below: the upload route passes its message on
                f"the portrait is {header.width}x{header.height}: a side under {MIN_PORTRAIT_SIDE} pixels is too "
                "small to show a face (send a larger photo)"
            )
        if long_side > MAX_PORTRAIT_ASPECT * short_side:
            raise InputTooLarge(  # a limit, like pixels and seconds: the upload route passes its message on
                f"the portrait is {header.width}x{header.height}: one side is more than {MAX_PORTRAIT_ASPECT:g}x "
                "the other (crop it closer to the face)"
            )
        return _decode(image, header, path)


@functools.cache
def _formats() -> tuple[str, ...]:
    """FORMATS this Pillow has a reader for (AVIF is a build option): open() fails on a name it lacks."""
    from PIL import Image

    Image.init()
    return tuple(name for name in FORMATS if name in Image.OPEN)


@contextmanager
def _opened(path: Path | str, max_pixels: int) -> Iterator[tuple[Image, ImageHeader]]:
    """The image opened by its header (no pixel decoded yet) and that header, refused when over max_pixels."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check_input_file(path, "image")
    refuse_costly_layout(path)  # strips, blocks and chunks Pillow's open would parse one by one
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            image = Image.open(path, formats=_formats())
    except Image.DecompressionBombError as err:  # Pillow's own ceiling, above any limit the settings allow
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{int(claimed[1]):,}" if claimed else f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,}"
        raise InputTooLarge(
            f"the image claims {count} pixels, over the limit of {max_pixels:,} pixels (SPINBOT_MAX_IMAGE_PIXELS)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        unread = _unread_format(path)
        raise (UnusableFile(path, unread) if unread else InputError(f"not a readable image: {path}")) from None
    with image:
        header = ImageHeader(image.format or "unknown", int(image.size[0]), int(image.size[1]))
        if header.pixels > max_pixels:
            raise InputTooLarge(
                f"the image is {header.width}x{header.height} ({header.pixels:,} pixels), over the limit "
                f"of {max_pixels:,} pixels (SPINBOT_MAX_IMAGE_PIXELS): scale it down"
            )
        yield image, header


# ISO-BMFF brands (the ftyp box's major and compatible ones) of HEIF, the format an iPhone takes photos in, which
# Pillow does not read without a plugin; AVIF shares the container and is read where this Pillow has it.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _unread_format(path: Path) -> str | None:
    """What an image Pillow could not identify is, and what to send instead, for a format people have photos in."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head[4:8] != b"ftyp":
        return None
    end = min(int.from_bytes(head[:4], "big"), len(head))
    brands = {head[i : i + 4] for i in range(8, end - 3, 4)}
    if brands & _AVIF_BRANDS and "AVIF" in _formats():
        return None  # an AVIF Pillow refused: a broken file, not a format
    if brands & (_HEIF_BRANDS | _AVIF_BRANDS):
        return "a HEIC/HEIF image (an iPhone photo?), which is not read: save it as JPEG or PNG"
    return None


def _decode(image: Image, header: ImageHeader, path: Path | str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image opened by _opened, upright as its EXIF orientation says. The decode is by
    the library that read the header, into a buffer of the checked size. (OpenCV decoded before, and read some
    headers otherwise: a TIFF with its width written twice was 3000x3000 to Pillow, 120000x3000 to OpenCV.)"""
    try:
        image.load()
        if image.size != (header.width, header.height):  # no reader of FORMATS does this; a new one must not
            raise InputError(
                f"the image decodes to {image.size[0]}x{image.size[1]}, not the {header.width}x{header.height} "
                f"its header says: {path}"
            )
        orientation = image.getexif().get(_ORIENTATION, 1)
        turn = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
        rgb = _rgb8(image)
    except (InputError, MemoryError):  # MemoryError: past the sandbox's memory limit, which says so
        raise
    except Exception:  # noqa: BLE001 - a broken or hostile stream: each reader fails in its own way
        raise InputError(f"not a readable image: {path}") from None
    image.close()  # Pillow's pixels freed before the turn makes a second copy of ours
    return np.ascontiguousarray(turn(rgb)) if turn is not None else rgb


_ORIENTATION = 0x0112  # the EXIF tag; what each value needs to stand upright, as Pillow's exif_transpose does it
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a),
}
_QUARTER_TURNS = (5, 6, 7, 8)  # the orientations whose upright image is the stored one's transpose
_BAND_ROWS = 256


def _rgb8(image: Image) -> np.ndarray:
    """8-bit sRGB: 16-bit samples by their high byte, grey and palettes expanded, transparent parts on white, an
    embedded colour profile applied (_to_srgb). Converted a band of rows at a time: Pillow keeps RGB in 4 bytes a
    pixel, and a whole-image convert and copy to numpy held two more copies of it (a 40 MP portrait peaked at
    580 MB)."""
    width, height = image.size
    rgb = np.empty((height, width, 3), np.uint8)
    to_srgb = _to_srgb(image)
    for top in range(0, height, _BAND_ROWS):
        band = image.crop((0, top, width, min(height, top + _BAND_ROWS)))
        if to_srgb is not None:
            from PIL import ImageCms

            band = ImageCms.applyTransform(band, to_srgb) or band  # None only for an in-place transform
        rgb[top : top + band.height] = _band_rgb8(band)
    return rgb


# Colour profiles: an iPhone's photos carry Display P3, cameras Adobe RGB. Their numbers read as sRGB (what the
# models were trained on and what the video is shown in) look dull, so RGB pixels are converted to sRGB where the
# profile says they are something else. A profile is at most this long (an RGB display or camera profile is a few
# KB) and one that does not parse is ignored, as browsers do: the numbers are then taken as sRGB. (CMYK files keep
# Pillow's plain conversion: print profiles are not what portraits come with.) Cost: 0.65 s more for a 12 MP
# photo on 2 slow cores (1.0 against 0.35 s to decode).
MAX_ICC_BYTES = 1 << 19  # 512 KiB; Pillow itself refuses a PNG whose profile inflates past 1 MiB


def _to_srgb(image: Image) -> ImageCmsTransform | None:
    """The transform from an RGB image's embedded profile to sRGB (relative colorimetric, as browsers render
    photos), or None: no profile, an sRGB one, another mode, or a profile too long or broken."""
    profile = image.info.get("icc_profile")
    if not profile or len(profile) > MAX_ICC_BYTES or image.mode != "RGB":
        return None
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if ImageCms.getProfileDescription(source).strip().startswith("sRGB"):
            return None
        return ImageCms.buildTransform(
            source, ImageCms.createProfile("sRGB"), "RGB", "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _band_rgb8(band: Image) -> np.ndarray:
    if band.has_transparency_data and band.mode not in ("F", "I") and not band.mode.startswith("I;16"):
        return _on_white(np.asarray(band.convert("RGBA")))
    if band.mode == "F":  # a PFM
        grey = np.clip(np.rint(np.asarray(band)), 0, 255).astype(np.uint8)
    elif band.mode == "I" or band.mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF, PPM)
        grey = np.clip(np.asarray(band) >> 8, 0, 255).astype(np.uint8)
    else:
        return np.asarray(band.convert("RGB") if band.mode != "RGB" else band)
    return grey[..., None]  # broadcast to the three channels


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """A cut-out portrait (transparent background) on white, as the page's preview and image viewers show it.
    Dropping the alpha showed what lay under it: black for most background removers, or the removed background."""
    alpha = rgba[..., 3:].astype(np.uint16)
    return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def fit_size(width: int, height: int, max_pixels: int, multiple: int = 16) -> tuple[int, int]:
    """Shrink (never enlarge) to at most max_pixels, keep the aspect, round down to a multiple of `multiple`."""
    scale = min(1.0, math.sqrt(max_pixels / float(width * height)))
    w = max(multiple, int(width * scale) // multiple * multiple)
    h = max(multiple, int(height * scale) // multiple * multiple)
    return w, h


def resize_to(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to exactly (width, height) keeping the aspect: scale to cover, then centre-crop the excess."""
    h0, w0 = img.shape[:2]
    scale = max(width / w0, height / h0)
    new_w, new_h = max(width, round(w0 * scale)), max(height, round(h0 * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(img, (new_w, new_h), interpolation=interp)
    x0, y0 = (new_w - width) // 2, (new_h - height) // 2
    return np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])
