"""Media an attacker shapes to get past the input checks (each test failed before its fix): an image whose readers
disagree on its size, a voice at a sample rate no voice is measured at, a voice whose channels multiply its decode;
and the formats and results of ordinary files, which the fixes keep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from spinbot.api.routes.uploads import check_content
from spinbot.backends.tts.analysis import analyse_voice
from spinbot.control.admission import check_voice
from spinbot.errors import InputError, InputTooLarge, InputTooSmall
from spinbot.media.audio import load_audio, load_voice
from spinbot.media.image import load_image, load_portrait, probe_image
from spinbot.samples import portrait_path
from spinbot.settings import get_settings
from tests.support.hostile_media import silent_flac, tiff_with_two_widths


# ---- C1: one library reads the header and decodes the pixels ----------------------------------------------------
@pytest.mark.parametrize("first", [30000, 1000])  # libtiff (OpenCV) decoded 30000x1000 and 1000x1000
def test_a_tiff_with_its_width_written_twice_is_refused_not_decoded_at_another_size(spinbot_env, tmp_path, first):
    tiff = tiff_with_two_widths(tmp_path / "two.tif", first, 3000, 1000)
    assert probe_image(tiff, 40_000_000).width == 3000  # the size the limits are checked on
    with pytest.raises(InputError) as refused:
        load_portrait(tiff, 40_000_000)
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match=r"^the portrait upload is not an image that can be decoded$"):
        check_content("portrait", tiff, get_settings())


def test_the_same_tiff_with_one_width_decodes(tmp_path):
    tiff = tiff_with_two_widths(tmp_path / "one.tif", 3000, 3000, 1000)
    assert load_portrait(tiff, 40_000_000).shape == (1000, 3000, 3)


def _opencv(path: Path) -> np.ndarray:
    """What the decode was before (cv2.imdecode, IMREAD_COLOR), as RGB."""
    return cv2.cvtColor(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Image.Image:
    """A real portrait (faces, gradients), not square, so a turn shows in the shape."""
    with Image.open(portrait_path(tmp_path_factory.mktemp("photo"))) as image:
        return image.convert("RGB").resize((160, 96))


CASES = [
    ("png", "RGB", {}),
    ("png", "RGBA", {}),
    ("png", "P", {}),
    ("png", "L", {}),
    ("png", "1", {}),
    ("png", "I;16", {}),
    ("jpg", "RGB", {"quality": 90}),
    ("jpg", "L", {}),
    ("jpg", "CMYK", {}),
    ("jpg", "RGB", {"exif": 6}),
    ("jpg", "RGB", {"exif": 7}),
    ("png", "RGB", {"exif": 8}),
    ("webp", "RGB", {"exif": 3}),
    ("webp", "RGBA", {"lossless": True}),
    ("tif", "RGB", {}),
    ("tif", "CMYK", {}),
    ("tif", "I;16", {}),
    ("bmp", "RGB", {}),
    ("gif", "P", {}),
    ("ppm", "RGB", {}),
    ("jp2", "RGB", {}),
]


@pytest.mark.parametrize(("suffix", "mode", "options"), CASES, ids=[f"{s}-{m}-{o}" for s, m, o in CASES])
def test_every_format_an_upload_took_still_decodes_as_opencv_did(tmp_path, photo, suffix, mode, options):
    """EXIF-turned, CMYK, 16-bit, palette and alpha images: the same pixels as OpenCV's decode (CMYK and 16-bit
    TIFF within 1 level: the two round differently)."""
    image = photo.convert("L").convert(mode) if mode == "I;16" else photo.convert(mode)
    if "exif" in options:
        options = {**options, "exif": _exif(options["exif"])}
    path = tmp_path / f"portrait.{suffix}"
    image.save(path, **options)
    decoded, before = load_portrait(path, get_settings().max_image_pixels), _opencv(path)
    assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous and decoded.flags.writeable
    assert decoded.shape == before.shape
    assert np.abs(decoded.astype(int) - before).max() <= 1


@pytest.mark.parametrize("suffix", ["ico", "tga", "pcx"])
def test_formats_no_upload_took_stay_refused(tmp_path, photo, suffix):
    """Pillow reads these, OpenCV never did: they stay refused now that Pillow decodes (ICO picks one of its sizes)."""
    path = tmp_path / f"portrait.{suffix}"
    photo.save(path)
    with pytest.raises(InputError, match="not a readable image"):
        load_image(path, get_settings().max_image_pixels)


# ---- C5: a sample rate no voice is measured at ------------------------------------------------------------------
def _tone(path: Path, rate: int, samples: int) -> Path:
    sf.write(path, (0.3 * np.sin(np.arange(samples) * 0.7)).astype(np.float32), rate)
    return path


@pytest.mark.parametrize(("rate", "samples"), [(1, 5), (100, 300), (7999, 3 * 7999)])
def test_a_voice_under_8000_hz_is_refused_at_upload_and_submission_naming_the_floor(
    spinbot_env, tmp_path, rate, samples
):
    voice = _tone(tmp_path / "low.wav", rate, samples)
    # was InputTooLarge, the class of inputs over a limit; the line and the answer's code (400) stay
    limit = f"the audio's sample rate {rate} Hz is outside 8000..384000 Hz"
    with pytest.raises(InputTooSmall) as refused:
        check_content("voice", voice, get_settings())
    assert str(refused.value) == f"the voice upload is refused: {limit}"
    with pytest.raises(InputTooSmall) as refused:
        check_voice(voice, get_settings(), "the narrator voice")
    assert str(refused.value) == f"the narrator voice: {limit}"


def test_a_voice_over_384000_hz_stays_refused_as_too_large(spinbot_env, tmp_path):
    voice = _tone(tmp_path / "high.wav", 400_000, 400_000)
    with pytest.raises(InputTooLarge) as refused:
        check_voice(voice, get_settings(), "the narrator voice")
    assert str(refused.value) == "the narrator voice: the audio's sample rate 400000 Hz is outside 8000..384000 Hz"
    assert not isinstance(refused.value, InputTooSmall)


def test_a_voice_at_8000_hz_is_accepted(tmp_path):
    audio, rate = load_voice(_tone(tmp_path / "phone.wav", 8000, 3 * 8000), max_seconds=60)
    assert rate == 8000 and len(audio) == 3 * 8000


def test_praat_failing_on_a_voice_is_one_line_in_the_users_words():
    with pytest.raises(InputError) as refused:
        analyse_voice((0.3 * np.sin(np.arange(300))).astype(np.float32), 100)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("the narrator voice (3.00 s at 100 Hz) could not be measured")
    assert "Analysis window" not in message


# ---- A1: a voice's decode costs its mono result, not its channels -----------------------------------------------
# tracemalloc's peak counts every thread's allocations: measured in this process, a thread an earlier test left
# running (a job rendering frames, a backend import) added its own to the decode's (17 MB for an 8 MB result, with
# a thread allocating a few frames at a time). A fresh interpreter runs the decode alone, its modules imported first
# as they are here.
PEAK = """
import json, sys, tracemalloc
import av, numpy, soundfile, soxr
import spinbot.media.video
from spinbot.media.audio import load_voice
tracemalloc.start()
audio, rate = load_voice(sys.argv[1], max_seconds=60)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"peak": peak, "rate": rate, "shape": list(audio.shape), "dtype": str(audio.dtype)}))
"""


def _decode_peak(path: Path) -> dict:
    """load_voice(path, max_seconds=60) alone in a fresh interpreter: the result's rate, shape and dtype, and the
    peak bytes tracemalloc saw during the decode."""
    root = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(path)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_an_8_channel_384_khz_flac_decodes_in_about_its_mono_size(tmp_path):
    """The probe's file at 5 s instead of 60: 8 channels of float32 were held whole (61 MB here, 737 MB at 60 s)
    before they were averaged."""
    flac = silent_flac(tmp_path / "8ch.flac", 5, rate=384_000, channels=8)
    decoded = _decode_peak(flac)
    peak, mono = decoded["peak"], 5 * 384_000 * 4
    assert decoded["rate"] == 384_000 and decoded["shape"] == [5 * 384_000] and decoded["dtype"] == "float32"
    assert peak < 1.5 * mono, f"{peak / 1e6:.0f} MB for a {mono / 1e6:.0f} MB result"


def _av_file(path: Path, channels: int, seconds: float, codec: str = "flac", rate: int = 48_000) -> Path:
    """Noise in a container libsndfile does not read (matroska, mp4: by the suffix), so FFmpeg decodes it."""
    layout = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}[channels]
    noise = (0.3 * np.random.default_rng(channels).standard_normal((channels, int(seconds * rate)))).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame(format="fltp", layout=layout, samples=noise.shape[1])
        for channel, samples in enumerate(noise):  # not zip(frame.planes): PyAV lists 9 planes for 8 channels
            frame.planes[channel].update(samples.tobytes())
        frame.sample_rate, frame.pts = rate, 0
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate)
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
    return path


def test_a_many_channel_voice_ffmpeg_decodes_costs_about_its_mono_size(tmp_path):
    mkv = _av_file(tmp_path / "6ch.mkv", 6, 10.0)
    decoded = _decode_peak(mkv)
    peak, mono = decoded["peak"], 480_000 * 4
    assert decoded["shape"] == [480_000] and decoded["dtype"] == "float32"
    assert peak < 3 * mono, f"{peak / 1e6:.0f} MB for a {mono / 1e6:.0f} MB result"


def test_an_8_channel_voice_ffmpeg_decodes_does_not_crash_the_process(tmp_path):
    """PyAV's planar to_ndarray crashed the process (SIGSEGV) on 8 channels: the API server, on an upload."""
    mkv = _av_file(tmp_path / "8ch.mkv", 8, 0.5)
    code = f"from spinbot.media.audio import load_voice; print(load_voice({str(mkv)!r}, max_seconds=60)[0].shape)"
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "(24000,)", done.stderr[-2000:]


VOICES = [(kind, channels) for kind in ("wav", "flac", "ogg", "mp3", "m4a") for channels in (1, 2, 6)]


@pytest.mark.parametrize(("kind", "channels"), [v for v in VOICES if v != ("mp3", 6)])  # mp3 holds two at most
def test_ordinary_voices_decode_to_the_same_samples_as_before(tmp_path, kind, channels):
    """The result is what reading the file whole and averaging its channels gave, to the bit."""
    if kind == "m4a":
        path = _av_file(tmp_path / "voice.m4a", channels, 2.0, codec="aac")
        planar = [frame.to_ndarray() for frame in _planar_frames(path)]
        whole = np.concatenate(planar, axis=1).T.astype(np.float32)
    else:
        path = tmp_path / f"voice.{kind}"
        noise = 0.3 * np.random.default_rng(channels).standard_normal((int(2.5 * 44_100), channels))
        sf.write(path, noise.astype(np.float32), 44_100)
        whole = sf.read(path, dtype="float32", always_2d=True)[0]
    audio, _ = load_audio(path, max_seconds=60)
    assert audio.tobytes() == np.ascontiguousarray(whole.mean(axis=1), dtype=np.float32).tobytes()
    assert load_audio(path, mono=False)[0].tobytes() == np.ascontiguousarray(whole).tobytes()


def _planar_frames(path: Path) -> list[av.AudioFrame]:
    """The decode before (float planar through a resampler), for up to 6 channels."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.codec_context.sample_rate)
        frames = [out for frame in container.decode(stream) for out in resampler.resample(frame)]
        return frames + resampler.resample(None)


def test_the_tts_task_reads_its_voice_within_spinbot_max_voice_seconds(spinbot_env, use_settings, tmp_path):
    """load_voice takes its limit from its caller: the speech node passes SPINBOT_MAX_VOICE_SECONDS."""
    from types import SimpleNamespace

    from spinbot.errors import InputTooLarge
    from spinbot.tasks.tts import _reference

    use_settings(max_voice_seconds=2)
    voice = _tone(tmp_path / "voice.wav", 16_000, 3 * 16_000)
    ctx = SimpleNamespace(node_id="tts", values={}, input_path=lambda name: voice)
    params = SimpleNamespace(narrator_voice=None, ref_text="")
    with pytest.raises(InputTooLarge, match="over the limit of 2 s"):
        _reference(ctx, params)
    use_settings(max_voice_seconds=60)
    assert _reference(ctx, params).audio.shape[0] == 3 * 16_000


# ---- a portrait under the size limit is refused as too small, not too large ------------------------------------
def test_a_portrait_too_small_is_refused_as_too_small_also_from_the_sandbox(spinbot_env, tmp_path):
    # was InputTooLarge, the class of inputs over a limit; the line and the answer's code (400) stay
    Image.new("RGB", (63, 200), "red").save(tmp_path / "small.png")
    line = "the portrait is 63x200: a side under 64 pixels is too small to show a face (send a larger photo)"
    with pytest.raises(InputTooSmall) as refused:
        load_portrait(tmp_path / "small.png", 40_000_000)
    assert str(refused.value) == line and not isinstance(refused.value, InputTooLarge)
    with pytest.raises(InputTooSmall) as refused:  # through a sandbox worker, as an upload is checked
        check_content("portrait", tmp_path / "small.png", get_settings())
    assert str(refused.value) == f"the portrait upload is refused: {line}"
