"""infinite_talk on real media: the astronaut portrait from scikit-image and the Beckett speech sample."""

from pathlib import Path

import av
import cv2
import numpy as np
import pyloudnorm
import pytest

from spinbot.backends.talk.animator import AnimatorBackend
from spinbot.backends.talk.base import SpeechTrack
from spinbot.backends.talk.motion import blinks, motion_tracks, mouth_opening
from spinbot.errors import InputError, ParamsError
from spinbot.media.audio import load_audio, write_wav
from spinbot.media.faces import detect_faces
from spinbot.media.features import frame_features, normalize_loudness, speech_bounds
from spinbot.media.image import load_image
from spinbot.media.video import iter_frames, probe, read_audio
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import get_settings
from spinbot.tasks.talk import InfiniteTalkParams
from spinbot.tasks.windows import plan_windows
from tests.support.tasks import run_talk, write_beckett_excerpt


def cropped_duration(meta: dict) -> float:
    crop = meta["steps"][0]
    assert crop["step"] == "audio_crop"
    return crop["end_s"] - crop["start_s"]


def decoded_frames(path: Path) -> list[np.ndarray]:
    return list(iter_frames(path))


def frame_rms(audio: np.ndarray, sr: int, fps: int, frames: int) -> np.ndarray:
    hop = sr / fps
    return np.array([np.sqrt(np.mean(np.square(audio[round(i * hop) : round((i + 1) * hop)]))) for i in range(frames)])


@pytest.fixture(scope="module")
def beckett_excerpt(tmp_path_factory) -> Path:
    """The first 2.5 s of the Beckett sample ("Ever tried. Ever failed.")."""
    return write_beckett_excerpt(tmp_path_factory.mktemp("audio") / "excerpt.wav")


@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> Path:
    return portrait_path(tmp_path_factory.mktemp("portrait"))


@pytest.fixture(scope="module")
def beckett_video(tmp_path_factory, portrait):
    """The whole 10 s Beckett sample on the astronaut, default params: run once, checked by several tests."""
    out, path = run_talk(tmp_path_factory.mktemp("talk"), portrait, voice_path())
    return out, path, decoded_frames(path)


def test_video_has_one_frame_per_frame_of_speech_in_h264_yuv420p_with_the_audio(beckett_video):
    out, path, frames = beckett_video
    expected = round(cropped_duration(out.meta) * 25)
    assert expected == 249  # the sample has speech to both ends: 9.963 s at 25 fps
    assert len(frames) == expected
    assert out.values["video_duration"] == pytest.approx(expected / 25)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == (512, 512)
    info = probe(path)
    assert info.frames == expected and info.fps == 25
    assert abs(info.audio_duration - info.duration) < 1 / 25


def test_mouth_motion_follows_the_speech_envelope(beckett_video):
    """Pearson r between the mouth region's change (measured from the pixels, head motion aligned away) and the
    speech RMS per frame, both taken from the output video."""
    _, path, frames = beckett_video
    blurred = [cv2.GaussianBlur(f, (0, 0), 1.5).astype(np.float32) for f in frames]
    face = detect_faces(frames[0])[0]
    y0, y1 = int(face.y + 0.7 * face.h), int(face.y + 1.05 * face.h)
    x0, x1 = int(face.x + 0.2 * face.w), int(face.x + 0.8 * face.w)
    neutral = blurred[0][y0:y1, x0:x1]

    def mouth_change(frame: np.ndarray, reach: int = 3) -> float:
        # The head moves a little: compare at the best whole-pixel alignment, so what remains is the mouth.
        return min(
            np.abs(frame[y0 + dy : y1 + dy, x0 + dx : x1 + dx] - neutral).mean()
            for dy in range(-reach, reach + 1)
            for dx in range(-reach, reach + 1)
        )

    motion = np.array([mouth_change(f) for f in blurred])
    audio, sr = read_audio(path)
    envelope = frame_rms(audio[:, 0], sr, 25, len(frames))
    r = np.corrcoef(motion, envelope)[0, 1]
    print(f"mouth motion vs speech envelope: Pearson r = {r:.3f}")
    assert r > 0.5


def test_the_background_stays_still(beckett_video):
    """Within a window the backdrop does not change; each window's chunk starts with a keyframe of its own
    (spinbot.tasks.talk_resume), which may quantize the flat backdrop a level apart: never more."""
    _, _, frames = beckett_video
    corner = (slice(0, 48), slice(464, 512))  # grey backdrop, top right, away from the head
    first = frames[0][corner].astype(np.int16)
    for window in plan_windows(len(frames), 81, 25):
        own = frames[window.new_start][corner].astype(np.int16)
        assert max(np.abs(frames[i][corner].astype(np.int16) - own).mean() for i in window.new_frames) < 0.5
        assert np.abs(own - first).mean() < 1.5


def test_the_muxed_speech_is_loudness_normalized(beckett_video):
    _, path, _ = beckett_video
    audio, sr = read_audio(path)
    assert sr == 48000
    assert pyloudnorm.Meter(sr).integrated_loudness(audio[:, 0].astype(np.float64)) == pytest.approx(-23, abs=0.5)
    assert np.abs(audio).max() < 1.0


def test_metadata_records_backend_ignored_params_steps_face_and_windows(beckett_video):
    out, _, _ = beckett_video
    meta = out.meta
    assert meta["backend"] == "lite"
    ignored = meta["ignored_params"]
    for name in (
        "wan_video_model",
        "infinitetalk_model",
        "sampling_steps",
        "sampling_cfg",
        "sampling_scheduler",
        "audio_cfg_scale",
        "positive_prompt",
    ):
        assert name in ignored
    for name in ("fps", "audio_scale", "frame_window_size", "motion_frame", "normalize_loudness"):
        assert name not in ignored
    assert [s["step"] for s in meta["steps"]] == [
        "audio_crop",
        "speech_separation",
        "loudness_normalization",
        "audio_features",
        "image_resize",
        "generate",
        "video_combine",
    ]
    assert meta["face_found"] is True and meta["faces_found"] == 1 and meta["warnings"] == []
    assert meta["eyes"] == "detected" and meta["lip_line"] == "found"
    assert meta["blinks"] >= 1  # ten seconds: blinks come every 2-6 s
    assert meta["windows"]["count"] == len(plan_windows(249, 81, 25)) == 4
    assert out.artifacts["video"].endswith("/talk.mp4")


def test_silence_around_the_speech_is_cropped_and_fps_sets_the_frame_count(tmp_path, portrait, beckett_excerpt):
    speech, sr = load_audio(beckett_excerpt)
    silence = np.zeros(int(1.5 * sr), np.float32)
    padded = write_wav(tmp_path / "padded.wav", np.concatenate([silence, speech, silence]), sr)
    out, path = run_talk(tmp_path, portrait, padded, fps=30)
    duration = cropped_duration(out.meta)
    assert 2.0 < duration < 2.5 + 0.2  # the silences are gone, a short margin kept
    frames = decoded_frames(path)
    assert len(frames) == round(duration * 30)
    info = probe(path)
    assert info.fps == 30 and abs(info.audio_duration - info.duration) < 1 / 30


def test_multi_window_runs_give_the_same_frame_count(tmp_path, portrait, beckett_excerpt):
    one, one_path = run_talk(tmp_path / "a", portrait, beckett_excerpt)
    many, many_path = run_talk(tmp_path / "b", portrait, beckett_excerpt, frame_window_size=20, motion_frame=5)
    assert one.meta["windows"]["count"] == 1
    assert many.meta["windows"]["count"] == len(plan_windows(round(cropped_duration(many.meta) * 25), 20, 5)) > 3
    assert len(decoded_frames(many_path)) == len(decoded_frames(one_path)) == round(cropped_duration(one.meta) * 25)


def speech_track(audio_path: Path, fps: int = 25) -> SpeechTrack:
    audio, sr = load_audio(audio_path)
    frames = round(len(audio) / sr * fps)
    return SpeechTrack(audio, sr, fps, frames, frame_features(audio, sr, fps, frames))


def test_frames_do_not_depend_on_the_window_plan_and_are_deterministic(portrait, beckett_excerpt):
    image = load_image(portrait, get_settings().max_image_pixels)
    speech = speech_track(beckett_excerpt)
    backend = AnimatorBackend()

    def render(window_size: int, motion: int) -> np.ndarray:
        state = backend.prepare(image, speech, InfiniteTalkParams())
        windows = plan_windows(speech.frames, window_size, motion)
        return np.stack([f for w in windows for f in backend.render_window(state, w)])

    reference = render(81, 25)
    assert len(reference) == speech.frames
    assert np.array_equal(render(20, 5), reference)
    assert np.array_equal(render(7, 0), reference)


def test_audio_scale_scales_the_mouth_motion(portrait, beckett_excerpt):
    image = load_image(portrait, get_settings().max_image_pixels)
    speech = speech_track(beckett_excerpt)
    layout = AnimatorBackend().prepare(image, speech, InfiniteTalkParams()).layout
    default = motion_tracks(speech, layout, 1.6)
    assert default.gap.max() > 0.04 * layout.face.h  # at the default, loud syllables open the lips visibly
    assert np.allclose(motion_tracks(speech, layout, 3.2).gap, 2 * default.gap)
    assert not motion_tracks(speech, layout, 0.0).gap.any()


def test_silence_keeps_the_mouth_closed():
    silence = np.zeros(16000, np.float32)
    assert not mouth_opening(frame_features(silence, 16000, 25, 25)).any()


def test_blinks_come_at_natural_intervals():
    fps = 25
    track = blinks(60 * fps, fps, np.random.default_rng(7))
    closed = track > 0
    onsets = np.flatnonzero(np.diff(closed.astype(int)) == 1) + 1
    lengths = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], closed.astype(int), [0]]))))[::2]
    assert 10 <= len(onsets) <= 30
    assert np.all(np.diff(onsets) >= 2 * fps - 1) and np.all(np.diff(onsets) <= 6 * fps + 1)
    assert np.all((lengths >= 3) & (lengths <= 5))  # about 150 ms
    assert np.all(track[closed].max() == 1.0)


def test_a_portrait_without_a_face_still_renders_with_a_warning(tmp_path, beckett_excerpt):
    gradient = np.tile(np.linspace(40, 220, 320, dtype=np.float32), (240, 1))
    image = np.dstack([gradient, gradient[::-1, ::-1], np.full_like(gradient, 128)]).astype(np.uint8)
    path = tmp_path / "no_face.png"
    cv2.imwrite(str(path), image)
    out, video = run_talk(tmp_path, path, beckett_excerpt)
    assert out.meta["face_found"] is False
    assert any("no face" in w for w in out.meta["warnings"])
    info = probe(video)
    assert (info.width, info.height) == (320, 240)
    assert info.frames == round(cropped_duration(out.meta) * 25)


def test_a_portrait_with_two_faces_says_which_one_speaks(tmp_path, portrait, beckett_excerpt):
    # the largest face was animated and the other stayed still, with no word of it
    one = load_image(portrait, 40_000_000)
    smaller = np.full_like(one, 128)  # the same person on the right, smaller: the left face is the largest
    smaller[51:461, 51:461] = cv2.resize(one, (410, 410), interpolation=cv2.INTER_AREA)
    two = np.concatenate([one, smaller], axis=1)
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), cv2.cvtColor(two, cv2.COLOR_RGB2BGR))
    out, _ = run_talk(tmp_path, path, beckett_excerpt)
    assert out.meta["faces_found"] == 2 and out.meta["warnings"] == [
        "2 faces in the portrait: animated the largest, on the left (crop the portrait to the one that speaks)"
    ]


def test_silence_only_audio_renders_the_whole_clip_with_a_warning(tmp_path, portrait):
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(16000, np.float32), 16000)
    out, video = run_talk(tmp_path, portrait, quiet)
    assert probe(video).frames == 25
    assert any("no speech" in w for w in out.meta["warnings"])


def test_an_unreadable_image_is_a_clear_input_error(tmp_path, beckett_excerpt):
    fake = tmp_path / "portrait.png"
    fake.write_text("this is not an image\n")
    with pytest.raises(InputError) as err:
        run_talk(tmp_path, fake, beckett_excerpt)
    # said by the upload check the job's portrait gets before the task decodes it: no server path in it
    assert str(err.value) == "the portrait (source_image) is not an image that can be decoded"


def test_motion_context_must_fit_in_the_window(tmp_path, portrait, beckett_excerpt):
    with pytest.raises(ParamsError, match=r"motion_frame \(20\) must be smaller than frame_window_size \(20\)"):
        run_talk(tmp_path, portrait, beckett_excerpt, frame_window_size=20, motion_frame=20)


def test_speech_bounds_trim_silence_and_keep_a_margin():
    sr = 16000
    speech, _ = load_audio(voice_path(), sr=sr)
    speech = speech[: 2 * sr]
    start, end = speech_bounds(np.concatenate([np.zeros(sr, np.float32), speech, np.zeros(sr, np.float32)]), sr)
    assert sr - int(0.1 * sr) <= start <= sr + int(0.4 * sr)
    assert 2 * sr <= end <= 3 * sr + int(0.1 * sr)
    assert speech_bounds(np.zeros(sr, np.float32), sr) is None


def test_loudness_normalization_reaches_the_target_and_guards_the_peak():
    speech, sr = load_audio(voice_path())
    normalized, loudness = normalize_loudness(speech, sr, -23.0)
    assert pyloudnorm.Meter(sr).integrated_loudness(normalized.astype(np.float64)) == pytest.approx(-23, abs=0.1)
    assert not loudness.peak_limited
    # Quiet speech with one loud click: reaching -16 LUFS would clip, so the gain stops at the peak ceiling.
    clicky = 0.05 * speech / np.abs(speech).max()
    clicky[sr] = 0.9
    limited, loudness = normalize_loudness(clicky, sr, -16.0)
    assert loudness.peak_limited
    assert np.abs(limited).max() == pytest.approx(10 ** (-1 / 20), rel=1e-4)
