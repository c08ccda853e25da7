"""Live output: HLS segments and playlist written while a video is made (media.segments, tasks.live), served by the
API (api/live.py); the final videos are the same with or without it."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from spinbot.media.segments import ENDLIST, PLAYLIST, HlsSegmenter
from spinbot.media.video import VideoWriter, iter_frames, read_audio
from spinbot.pipelines.spec import get_pipeline
from spinbot.samples import portrait_path, voice_path
from spinbot.storage.local import LocalStore
from spinbot.tasks.live import live_key
from spinbot.tasks.windows import plan_windows
from tests.support.tasks import run_talk, write_beckett_excerpt

FPS = 25
SIZE = (64, 48)
RATE = 48_000


def frame_at(index: int) -> np.ndarray:
    """A frame whose content says its index: a bright bar that moves one column a frame over a gradient."""
    w, h = SIZE
    frame = np.tile(np.linspace(0, 120, w, dtype=np.uint8)[None, :, None], (h, 1, 3))
    frame[:, index % w] = 250
    return frame


def tone(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 330 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def segment_durations(playlist: str) -> list[float]:
    return [float(d) for d in re.findall(r"#EXTINF:([0-9.]+),", playlist)]


class Published:
    """What a segmenter published, in order, with a copy of each file as it was at that moment."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.order: list[tuple[str, str]] = []
        self.playlists: list[str] = []

    def __call__(self, name: str, path: Path, content_type: str) -> None:
        self.order.append((name, content_type))
        shutil.copyfile(path, self.folder / name)
        if name == PLAYLIST:
            self.playlists.append(path.read_text())


@pytest.fixture
def published(tmp_path) -> Published:
    folder = tmp_path / "published"
    folder.mkdir()
    return Published(folder)


def write_stream(
    tmp_path: Path,
    published: Published,
    frames: int,
    cuts: set[int],
    max_frames: int,
    seconds_of_audio: float | None = None,
) -> HlsSegmenter:
    audio = tone(seconds_of_audio if seconds_of_audio is not None else frames / FPS)
    segmenter = HlsSegmenter(tmp_path / "work", FPS, *SIZE, max_frames, published, audio=(audio, RATE))
    for index in range(frames):
        segmenter.write(frame_at(index))
        if index + 1 in cuts:
            segmenter.cut()
    segmenter.finish()
    return segmenter


def test_each_cut_publishes_a_playable_segment_before_the_playlist_that_lists_it(tmp_path, published):
    segmenter = write_stream(tmp_path, published, frames=70, cuts={25, 45}, max_frames=25)
    # cut at 25 | cut at 45 | 25 more reach the limit and end by themselves; finish() has no frame left to publish
    assert segmenter.segments == 3 and segmenter.frames == 70
    names = [name for name, _ in published.order]
    assert names == ["seg-00000.ts", PLAYLIST, "seg-00001.ts", PLAYLIST, "seg-00002.ts", PLAYLIST, PLAYLIST]
    assert dict(published.order)["seg-00000.ts"] == "video/mp2t"
    assert [segment_durations(p) for p in published.playlists] == [[1.0], [1.0, 0.8], [1.0, 0.8, 1.0], [1.0, 0.8, 1.0]]
    assert [ENDLIST in p for p in published.playlists] == [False, False, False, True]
    assert "#EXT-X-TARGETDURATION:1\n" in published.playlists[-1]
    assert "#EXT-X-PLAYLIST-TYPE:EVENT\n" in published.playlists[-1]
    assert not list((tmp_path / "work").glob("*.ts")), "published segments are not kept in the work folder"


def test_segments_join_into_the_whole_video_with_continuous_timestamps_and_audio(tmp_path, published):
    write_stream(tmp_path, published, frames=70, cuts={25, 45}, max_frames=30)
    starts, counts = [], []
    for index in range(3):
        segment = published.folder / f"seg-{index:05d}.ts"
        with av.open(str(segment)) as container:
            packets = [p for p in container.demux(video=0) if p.size]
            assert packets[0].is_keyframe, "every segment starts with a keyframe: it plays on its own"
            starts.append(packets[0].pts)
            counts.append(len(packets))
    assert counts == [25, 20, 25]
    with av.open(str(published.folder / "seg-00000.ts")) as container:
        video_start, audio_start = (container.streams.video[0].start_time, container.streams.audio[0].start_time)
    # The AAC priming block comes first, so the speech's first sample plays with the first frame.
    assert video_start - audio_start == 1024 * 90_000 // RATE
    ticks = 90_000 // FPS  # MPEG-TS timestamps are in 1/90000 s
    assert [s - starts[0] for s in starts] == [0, 25 * ticks, 45 * ticks], "timestamps run on across segments"

    joined = tmp_path / "joined.ts"  # MPEG-TS segments concatenate byte by byte
    joined.write_bytes(b"".join((published.folder / f"seg-{i:05d}.ts").read_bytes() for i in range(3)))
    frames = list(iter_frames(joined))
    assert len(frames) == 70
    bars = [int(np.argmax(f[SIZE[1] // 2, :, 0].astype(int))) for f in frames]
    assert bars == [i % SIZE[0] for i in range(70)], "every frame once, in order"
    audio, rate = read_audio(joined)
    expected = tone(70 / FPS)
    assert rate == RATE and abs(len(audio) - len(expected)) <= 2 * 1024  # AAC priming and the last block

    # One continuous AAC stream: no gap or repeat at the joins. The decoded audio lines up with the source, and
    # the coding error around each join is no larger than anywhere else.
    def misfit(delay: int) -> float:  # AAC decoding starts with the encoder's and the decoder's delay
        return float(np.mean((audio[delay : delay + RATE, 0] - expected[:RATE]) ** 2))

    delay = min(range(4096), key=misfit)
    error = audio[delay : delay + len(expected), 0] - expected[: len(audio) - delay]
    block = RATE // 50
    rms = [float(np.sqrt(np.mean(error[s : s + block] ** 2))) for s in range(0, len(error) - block, block)]
    for join_s in (1.0, 1.8):
        around = rms[int(join_s * 50) - 1 : int(join_s * 50) + 1]
        assert max(around) < 2 * np.median(rms), (join_s, around, np.median(rms))
    assert np.median(rms) < 0.1 * np.sqrt(np.mean(expected**2))


def test_audio_past_the_video_is_left_out(tmp_path, published):
    write_stream(tmp_path, published, frames=25, cuts=set(), max_frames=25, seconds_of_audio=3.0)
    audio, _ = read_audio(published.folder / "seg-00000.ts")
    assert len(audio) <= RATE + 2 * 1024


def test_close_without_finish_drops_the_half_segment_and_leaves_the_playlist_open(tmp_path, published):
    segmenter = HlsSegmenter(tmp_path / "work", FPS, *SIZE, 10, published)
    for index in range(15):
        segmenter.write(frame_at(index))
    segmenter.close()
    assert [name for name, _ in published.order] == ["seg-00000.ts", PLAYLIST]
    assert ENDLIST not in published.playlists[-1]
    assert not list((tmp_path / "work").glob("*.ts"))


# ---- the tasks -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def talk_inputs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    return portrait_path(folder), write_beckett_excerpt(folder / "speech.wav")


WINDOWS = {"frame_window_size": 20, "motion_frame": 4}


def test_infinite_talk_publishes_one_segment_per_window(tmp_path, talk_inputs, use_settings):
    use_settings(talk_max_pixels=192 * 192)
    out, video = run_talk(tmp_path, *talk_inputs, **WINDOWS)
    plan = out.meta["windows"]
    live = out.meta["live"]
    assert live["segments"] == plan["count"] >= 3
    assert live["playlist"] == live_key("job1", "infinite_talk") == "jobs/job1/infinite_talk/live/index.m3u8"
    store = tmp_path / "store"
    playlist = (store / live["playlist"]).read_text()
    windows = plan_windows(sum(1 for _ in iter_frames(video)), WINDOWS["frame_window_size"], WINDOWS["motion_frame"])
    assert segment_durations(playlist) == [len(w.new_frames) / FPS for w in windows]
    assert playlist.rstrip().endswith(ENDLIST)

    joined = b"".join(
        (store / "jobs/job1/infinite_talk/live" / f"seg-{i:05d}.ts").read_bytes() for i in range(len(windows))
    )
    (tmp_path / "joined.ts").write_bytes(joined)
    live_frames = list(iter_frames(tmp_path / "joined.ts"))
    final_frames = list(iter_frames(video))
    assert len(live_frames) == len(final_frames)
    worst = min(psnr(a, b) for a, b in zip(live_frames, final_frames))
    assert worst > 30, f"the live frames are the video's frames (lowest PSNR {worst:.1f} dB)"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


@pytest.fixture
def encoded(monkeypatch, tmp_path) -> dict[str, list[str]]:
    """The frames each VideoWriter of this test was given, by file name, as digests: what the final video is
    encoded from. (libx264 with threads does not give the same bytes twice for the same frames, so two encodes of
    the same frames are compared by what went in, and by PSNR of what came out.) Only writers under this test's
    tmp_path count: a job another test left running in a thread writes its own upscaled.mp4 meanwhile."""
    given: dict[str, list[str]] = {}
    real_write = VideoWriter.write

    def write(self, frame):
        if Path(self.path).resolve().is_relative_to(tmp_path.resolve()):
            given.setdefault(self.path.name, []).append(hashlib.sha1(np.ascontiguousarray(frame)).hexdigest())
        real_write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", write)
    return given


def assert_same_video(with_live: Path, without: Path, frames_with: list[str], frames_without: list[str]) -> None:
    assert frames_with == frames_without, "the final video is encoded from the same frames"
    decoded_with, decoded_without = list(iter_frames(with_live)), list(iter_frames(without))
    assert len(decoded_with) == len(decoded_without) == len(frames_with)
    worst = min(psnr(a, b) for a, b in zip(decoded_with, decoded_without))
    assert worst > 40, f"lowest PSNR {worst:.1f} dB"


def talk_frames(encoded: dict[str, list[str]]) -> list[str]:
    """The frames the talk video was encoded from: its windows' chunks in order (spinbot.tasks.talk_resume), taken
    out of `encoded` for the next run."""
    return [digest for name in sorted(n for n in encoded if n.startswith("chunk-")) for digest in encoded.pop(name)]


def test_the_final_talk_video_is_the_same_with_and_without_live_output(tmp_path, talk_inputs, use_settings, encoded):
    use_settings(talk_max_pixels=192 * 192)
    without, video_without = run_talk(tmp_path / "off", *talk_inputs, live_output=False, **WINDOWS)
    frames_without = talk_frames(encoded)
    assert without.meta["live"] == {}
    assert not list((tmp_path / "off" / "store").rglob("*.ts"))
    with_live, video_with = run_talk(tmp_path / "on", *talk_inputs, **WINDOWS)
    assert with_live.meta["live"]["segments"] >= 3
    assert_same_video(video_with, video_without, talk_frames(encoded), frames_without)


def test_a_rerun_replaces_the_earlier_attempts_live_output(tmp_path, talk_inputs, use_settings):
    use_settings(talk_max_pixels=192 * 192)
    stale = tmp_path / "store" / "jobs/job1/infinite_talk/live/seg-00099.ts"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier attempt")
    out, _ = run_talk(tmp_path, *talk_inputs, **WINDOWS)
    assert not stale.exists()
    assert len(list(stale.parent.glob("seg-*.ts"))) == out.meta["live"]["segments"]


def test_a_store_that_refuses_the_live_output_does_not_fail_the_render(
    tmp_path, talk_inputs, use_settings, monkeypatch
):
    use_settings(talk_max_pixels=192 * 192)

    real_upload = LocalStore.upload

    def refuse_live(self, src, key, content_type=None):
        if "/live/" in key:
            raise OSError("disk full")
        return real_upload(self, src, key, content_type)

    monkeypatch.setattr(LocalStore, "upload", refuse_live)
    out, video = run_talk(tmp_path, *talk_inputs, **WINDOWS)
    assert out.meta["live"]["warning"] == "the live output stopped: disk full"
    assert out.meta["live"]["segments"] == 0
    assert len(list(iter_frames(video))) > 0


def test_upscale_video_publishes_one_segment_per_batch_and_the_same_final_video(tmp_path, encoded):
    from tests.unit.test_upscale import upscale, write_clip

    clip = write_clip(tmp_path / "talk.mp4", frames=45, side=96)
    video_without, without = upscale(clip, tmp_path / "off", live_output=False, batch_size=20)
    frames_without = encoded.pop("upscaled.mp4")
    video_with, with_live = upscale(clip, tmp_path / "on", live_output=True, batch_size=20)
    assert without.meta["live"] == {}
    live = with_live.meta["live"]
    assert live["segments"] == 3 and live["playlist"] == "jobs/job/upscale_video/live/index.m3u8"
    playlist = (tmp_path / "on" / live["playlist"]).read_text()
    assert segment_durations(playlist) == [0.8, 0.8, 0.2] and playlist.rstrip().endswith(ENDLIST)
    first = tmp_path / "on" / "jobs/job/upscale_video/live/seg-00000.ts"
    with av.open(str(first)) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (192, 192)
        assert container.streams.audio, "the segment carries its audio"
    assert_same_video(video_with, video_without, encoded["upscaled.mp4"], frames_without)


def test_jobs_of_spinbot_run_ask_for_live_output_only_when_watched(spinbot_env, tmp_path):
    from spinbot.cli_checks import open_runner
    from spinbot.control.requests import JobRequest
    from spinbot.samples import portrait_path

    for watched in (False, True):
        runner = open_runner(watch=watched)
        job_id = runner.create_job(JobRequest(prompt="the sea", image=portrait_path(tmp_path), voice=voice_path()))
        job = runner.jobs.get(job_id)
        assert runner._request(job, job.node("infinite_talk"), {}, get_pipeline(job.pipeline)).live_output is watched


def test_cuts_asked_for_every_frame_make_segments_of_half_a_second(tmp_path, published):
    """A window of 2 frames with 1 of motion context cut a segment (and rewrote the playlist) per frame."""
    segmenter = write_stream(tmp_path, published, frames=60, cuts=set(range(1, 61)), max_frames=50)
    assert segmenter.segments == 5 and segmenter.frames == 60
    assert segment_durations(published.playlists[-1]) == [0.52, 0.52, 0.52, 0.52, 0.32]  # 13 frames at 25 fps


def test_a_cap_below_half_a_second_still_makes_segments_of_half_a_second(tmp_path, published):
    """The cap the tasks pass is a window's new frames or the upscaler's batch_size: frame_window_size=2 with
    motion_frame=1 (windows of 1 new frame), or batch_size=1, made a segment and a playlist rewrite per frame."""
    segmenter = write_stream(tmp_path, published, frames=60, cuts=set(range(1, 61)), max_frames=1)
    assert segmenter.segments == 5 and len(published.playlists) == 5
    assert segment_durations(published.playlists[-1]) == [0.52, 0.52, 0.52, 0.52, 0.32]


def test_windows_of_one_new_frame_publish_half_second_segments(tmp_path, talk_inputs, use_settings):
    use_settings(talk_max_pixels=96 * 96)
    out, _ = run_talk(tmp_path, *talk_inputs, frame_window_size=2, motion_frame=1)
    frames = out.meta["steps"][-1]["frames"]
    assert out.meta["windows"]["count"] >= frames - 1 >= 40  # a window a frame
    assert out.meta["live"]["segments"] == -(-frames // 13)  # 13 frames (0.52 s at 25 fps) a segment


def test_a_superseded_attempt_stops_writing_the_newer_attempts_live_output(tmp_path):
    """Two runs of one node (the older one's lease ran out mid-render and it rendered on): once the newer one has
    started its live output, the older one writes no segment or playlist into it, and the playlist the API serves
    lists the newer one's segments only."""
    from spinbot.tasks.base import TaskContext
    from spinbot.tasks.live import LiveOutput

    store = LocalStore(tmp_path / "store")
    audio = (tone(4.0), RATE)

    def attempt(name: str, start_frame: int) -> LiveOutput:
        ctx = TaskContext(job_id="job1", node_id="infinite_talk", store=store, workdir=tmp_path / name)
        return LiveOutput(ctx, FPS, *SIZE, 25, audio, start_frame=start_frame)

    def window(live: LiveOutput, first: int) -> None:
        for index in range(first, first + 25):
            live.write(frame_at(index))
        live.cut()

    older = attempt("older", 0)
    window(older, 0)
    newer = attempt("newer", 25)  # resumed after the older one's first window
    window(newer, 25)
    window(older, 25)  # the older one woke up: its second window
    window(older, 50)

    playlist = store.get_bytes(live_key("job1", "infinite_talk")).decode()
    assert segment_durations(playlist) == [1.0]  # the newer attempt's one window, not the older one's three
    assert sorted(p.name for p in (tmp_path / "store/jobs/job1/infinite_talk/live").glob("seg-*.ts")) == [
        "seg-00000.ts"
    ]
    assert older.warning == "the live output stopped: another run of node 'infinite_talk' writes it now"
    assert newer.warning is None
    window(newer, 50)
    newer.finish()
    playlist = store.get_bytes(live_key("job1", "infinite_talk")).decode()
    assert segment_durations(playlist) == [1.0, 1.0] and ENDLIST in playlist
