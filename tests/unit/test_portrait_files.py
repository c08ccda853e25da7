"""Portraits and voices as people have them: cut-out PNGs with a transparent background, iPhone photos (HEIC), a
video with no sound given as the voice. Each gives the picture they see, or one line saying what to send instead."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from spinbot.api.routes.uploads import check_content
from spinbot.errors import InputError
from spinbot.media.image import load_image, load_portrait
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import get_settings
from tests.support.cli import run_cli

MAX_PIXELS = 40_000_000
RED, WHITE = (200, 30, 30), (255, 255, 255)


def _cut_out(mode: str) -> Image.Image:
    """Red everywhere, but only the left half opaque, a column half transparent: the right half's red is hidden."""
    alpha = np.zeros((32, 64), np.uint8)
    alpha[:, :32], alpha[:, 40] = 255, 128
    rgba = np.dstack([np.full((32, 64, 3), RED, np.uint8), alpha])
    image = Image.fromarray(rgba, "RGBA")
    if mode == "P":  # a palette PNG whose transparent colour is named by its tRNS chunk
        palette = Image.fromarray(np.where(alpha[..., None] == 255, 0, 1).astype(np.uint8)[..., 0], "P")
        palette.putpalette([*RED, 0, 0, 0] + [0] * 762)
        palette.info["transparency"] = 1
        return palette
    return image.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_a_cut_out_portrait_is_on_white_as_the_page_shows_it(tmp_path, mode):
    # the alpha was dropped: the pixels under the transparent part came out (black for most cut-out tools' PNGs,
    # here red), while the page's preview showed them white
    path = tmp_path / f"cut-out-{mode}.png"
    _cut_out(mode).save(path)
    # load_image: the decode itself (a swatch this small is under the portrait's 64 pixels a side)
    rgb = load_image(path, MAX_PIXELS)
    opaque = rgb[0, 0]
    assert rgb.shape == (32, 64, 3) and (rgb[:, :32] == opaque).all() and (rgb[:, 50:] == WHITE).all()
    if mode != "P":
        assert (np.abs(rgb[:, 40].astype(int) - (opaque.astype(int) + 255) // 2) <= 1).all()  # half way to white


# ---- files that are no portrait or no voice, as people send them ---------------------------------------------------
HEIF = "a HEIC/HEIF image (an iPhone photo?), which is not read: save it as JPEG or PNG"
NO_SOUND = "a video with no sound track: give a recording of the narrator's voice"


def _heic(path: Path, brand: bytes = b"heic") -> Path:
    """An ISO-BMFF file as an iPhone writes a photo: an ftyp box naming the brand, then boxes Pillow cannot read."""
    path.write_bytes(b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00mif1" + brand + bytes(2000))
    return path


def _video(path: Path, sound: np.ndarray | None = None) -> Path:
    """A second of black 64x64 frames, with `sound` (mono float32 at 16 kHz) as its AAC track when given."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        track = container.add_stream("aac", rate=16000) if sound is not None else None
        for _ in range(25):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
        if track is not None:
            frame = av.AudioFrame.from_ndarray(sound[None], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            container.mux(track.encode(frame))
            container.mux(track.encode(None))
    return path


@pytest.mark.parametrize("brand", [b"heic", b"mif1"])
def test_an_iphone_photo_is_named_with_what_to_do(spinbot_env, tmp_path, brand):
    # it was "not a readable image" (the CLI) or "not an image that can be decoded" (the page): a broken file?
    photo = _heic(tmp_path / "IMG_0001.HEIC", brand)
    with pytest.raises(InputError) as refused:
        load_portrait(photo, MAX_PIXELS)
    assert str(refused.value) == f"{photo}: {HEIF}"
    with pytest.raises(InputError) as refused:
        check_content("portrait", photo, get_settings())
    assert str(refused.value) == f"the portrait upload is refused: {HEIF}"


def test_a_video_without_sound_as_the_voice_says_so(spinbot_env, tmp_path):
    video = _video(tmp_path / "clip.mp4")
    code, lines = run_cli("run", "--prompt", "hi", "--image", str(portrait_path(tmp_path)), "--voice", str(video))
    assert code == 2 and lines == [f"error: {video}: {NO_SOUND}"]
    with pytest.raises(InputError) as refused:
        check_content("voice", video, get_settings())
    assert str(refused.value) == f"the voice upload is refused: {NO_SOUND}"


def test_a_video_with_sound_is_a_voice(tmp_path):
    from spinbot.media.audio import load_audio, load_voice

    speech, _ = load_audio(voice_path())
    audio, rate = load_voice(_video(tmp_path / "talk.mp4", speech), max_seconds=60)
    assert rate == 16000 and abs(len(audio) - len(speech)) < rate // 10


def test_a_photo_over_the_pixel_limit_says_what_to_do(tmp_path):
    # a 48 MP phone photo was refused naming the setting only
    photo = tmp_path / "big.png"
    Image.new("RGB", (800, 600)).save(photo)
    with pytest.raises(InputError) as refused:
        load_portrait(photo, 400_000)
    assert str(refused.value) == (
        "the image is 800x600 (480,000 pixels), over the limit of 400,000 pixels (SPINBOT_MAX_IMAGE_PIXELS): "
        "scale it down"
    )


# ---- colour profiles: an iPhone photo's Display P3 numbers are not sRGB ----------------------------------------------

SWATCHES = np.array([[(200, 100, 100), (220, 170, 140), (128, 128, 128), (60, 120, 200), (30, 200, 60)]], np.uint8)


def _srgb_from_p3(pixels: np.ndarray) -> np.ndarray:
    """What the test profile's numbers are in sRGB, worked out from the primaries: linear light through the P3 matrix
    to D50 XYZ, back through the sRGB profile's own matrix, then sRGB's curve (the relative colorimetric intent of
    two matrix/curve profiles is exactly this)."""
    from PIL import ImageCms

    from tests.support.icc import DISPLAY_P3, GAMMA_U8F8

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).profile
    to_xyz = np.array([DISPLAY_P3[c] for c in ("red", "green", "blue")]).T
    srgb_to_xyz = np.array([getattr(srgb, f"{c}_colorant")[0] for c in ("red", "green", "blue")]).T
    linear = (pixels / 255.0) ** (GAMMA_U8F8 / 256)
    out = np.clip(linear @ to_xyz.T @ np.linalg.inv(srgb_to_xyz).T, 0, 1)
    encoded = np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)
    return np.rint(encoded * 255)


def _tagged_png(path: Path, profile: bytes | None) -> Path:
    Image.fromarray(np.repeat(SWATCHES, 8, axis=0)).save(path, icc_profile=profile)
    return path


def test_a_display_p3_photo_is_converted_to_srgb(tmp_path):
    # its numbers were taken as sRGB: every saturated colour came out duller than the phone shows it
    from tests.support.icc import rgb_profile

    got = load_image(_tagged_png(tmp_path / "p3.png", rgb_profile()), MAX_PIXELS)[0].astype(int)
    expected = _srgb_from_p3(SWATCHES[0])
    assert np.abs(got - expected).max() <= 2
    assert np.abs(expected - SWATCHES[0]).max() > 10  # the conversion moves these colours visibly


def test_an_srgb_broken_or_oversized_profile_keeps_the_numbers(tmp_path):
    from PIL import ImageCms

    from spinbot.media.image import MAX_ICC_BYTES
    from tests.support.icc import rgb_profile

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    huge = rgb_profile() + b"\0" * MAX_ICC_BYTES  # a valid profile, past the length read
    for name, profile in {"none": None, "srgb": srgb, "broken": b"not a profile " * 40, "huge": huge}.items():
        got = load_image(_tagged_png(tmp_path / f"{name}.png", profile), MAX_PIXELS)
        assert (got == np.repeat(SWATCHES, 8, axis=0)).all(), name
