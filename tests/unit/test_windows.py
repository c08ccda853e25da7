import itertools

import numpy as np
import pytest

from spinbot.tasks.windows import Window, frame_count, plan_windows

COMBOS = [
    (n, w, m)
    for n, w, m in itertools.product(
        [1, 2, 5, 19, 20, 21, 80, 81, 82, 250, 1000, 10_007], [1, 2, 5, 20, 81], [0, 1, 4, 5, 19, 25, 80]
    )
    if m < w
]


def produced_frames(windows: list[Window]) -> list[int]:
    return [frame for w in windows for frame in w.new_frames]


@pytest.mark.parametrize("n,w,m", COMBOS)
def test_every_output_frame_is_produced_exactly_once_in_order(n, w, m):
    windows = plan_windows(n, w, m)
    assert produced_frames(windows) == list(range(n))


@pytest.mark.parametrize("n,w,m", COMBOS)
def test_windows_have_the_size_the_context_and_the_overlap_asked_for(n, w, m):
    windows = plan_windows(n, w, m)
    assert [win.index for win in windows] == list(range(len(windows)))
    assert all(win.size == w for win in windows)
    assert windows[0].start == 0 and windows[0].context == 0
    for prev, win in itertools.pairwise(windows):
        assert win.start == prev.end - m  # the motion context: the previous window's last m frames
        assert win.context == m
        assert win.new_start == win.start + m == prev.new_end
    # Only the last window may run past the video; it is trimmed to it.
    assert all(win.end <= n for win in windows[:-1])
    assert windows[-1].end >= n and windows[-1].new_end == n


@pytest.mark.parametrize("n,w,m", [(1, 81, 25), (80, 81, 25), (81, 81, 25), (82, 81, 25), (57, 20, 5)])
def test_keep_selects_the_new_frames_of_a_fully_generated_window(n, w, m):
    for win in plan_windows(n, w, m):
        generated = np.arange(win.start, win.end)  # a backend that generates all w frames of the window
        assert generated[win.keep].tolist() == list(win.new_frames)


def test_short_and_exact_videos_take_one_window():
    assert plan_windows(1, 81, 25) == [Window(0, 0, 81, 0, 0, 1)]
    assert plan_windows(81, 81, 25) == [Window(0, 0, 81, 0, 0, 81)]
    two = plan_windows(82, 81, 25)
    assert len(two) == 2 and two[1] == Window(1, 56, 137, 25, 81, 82)


def test_the_last_window_is_padded_past_the_end_and_trimmed():
    windows = plan_windows(250, 81, 25)
    last = windows[-1]
    assert (last.start, last.end, last.new_start, last.new_end) == (224, 305, 249, 250)
    assert last.end - 250 == 55  # padding frames, generated on silence and dropped


def test_large_videos_scale_linearly():
    windows = plan_windows(90_000, 81, 25)  # an hour at 25 fps
    assert len(windows) == 1 + -(-(90_000 - 81) // 56)
    assert produced_frames(windows) == list(range(90_000))


@pytest.mark.parametrize("duration", [0.021, 0.5, 1.0, 3.2, 9.963, 61.7, 600.0])
@pytest.mark.parametrize("fps", [24, 25, 30])
def test_windows_cover_any_audio_length(duration, fps):
    sr = 16_000
    frames = frame_count(round(duration * sr) / sr, fps)
    assert frames == round(duration * fps)
    windows = plan_windows(frames, 81, 25)
    assert produced_frames(windows) == list(range(frames))


@pytest.mark.parametrize(
    "n,w,m,message",
    [
        (10, 20, 20, "motion_frame"),
        (10, 20, 25, "motion_frame"),
        (10, 20, -1, "motion_frame"),
        (10, 0, 0, "frame_window_size"),
        (0, 20, 5, "at least one frame"),
    ],
)
def test_bad_window_plans_are_refused_with_a_clear_message(n, w, m, message):
    with pytest.raises(ValueError, match=message):
        plan_windows(n, w, m)


@pytest.mark.parametrize("n,w,m", COMBOS)
def test_the_window_count_is_the_plans_length(n, w, m):
    from spinbot.tasks.windows import window_count

    assert window_count(n, w, m) == len(plan_windows(n, w, m))


def test_the_talk_task_refuses_too_many_windows_before_rendering_one(tmp_path, monkeypatch):
    """frame_window_size=2 with motion_frame=1 at 120 fps: a window a frame, 36,000 for 300 s of speech, each with a
    chunk and a manifest listing all before it (1,799 windows wrote 154 MB of manifests)."""
    import spinbot.tasks.windows as windows
    from spinbot.errors import ParamsError
    from spinbot.media.audio import load_audio, write_wav
    from spinbot.samples import portrait_path, voice_path
    from tests.support.tasks import run_talk

    monkeypatch.setattr(windows, "MAX_WINDOWS", 30, raising=False)
    audio, sr = load_audio(voice_path())
    speech = write_wav(tmp_path / "speech.wav", audio[: 2 * sr], sr)
    with pytest.raises(ParamsError, match=r"^infinite_talk: frame_window_size 2 with motion_frame 1 makes \d+ windows"):
        run_talk(tmp_path, portrait_path(tmp_path), speech, frame_window_size=2, motion_frame=1)
    assert not list((tmp_path / "store").rglob("chunk*")), "no window was rendered"


def test_the_talk_task_refuses_denoising_over_the_limit_on_the_real_speech(tmp_path, spinbot_env, use_settings):
    """Admission checks SPINBOT_MAX_TALK_FRAME_STEPS on the speech estimated; the task again on the speech it got,
    before a window is rendered (2 s at 25 fps: one window of 81 frames x 6 steps x 1 pass, 486 frame-steps)."""
    from spinbot.errors import ParamsError
    from spinbot.media.audio import load_audio, write_wav
    from spinbot.samples import portrait_path, voice_path
    from tests.support.tasks import run_talk

    use_settings(max_talk_frame_steps=485)
    audio, sr = load_audio(voice_path())
    speech = write_wav(tmp_path / "speech.wav", audio[: 2 * sr], sr)
    with pytest.raises(ParamsError, match=r"^infinite_talk: 1 window of 81 frames x 6 sampling_steps x 1 model pass "):
        run_talk(tmp_path, portrait_path(tmp_path), speech)
    assert not list((tmp_path / "store").rglob("chunk*")), "no window was rendered"
