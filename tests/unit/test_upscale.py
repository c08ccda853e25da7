"""upscale_video on real media: a moving crop of a real portrait with a speech-like track, through execute_task."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from spinbot.backends.upscale.base import feathered_ellipse, scale_from_model_name
from spinbot.backends.upscale.resample import ResampleUpscaler
from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.errors import ParamsError
from spinbot.media.video import VideoWriter, iter_frames, probe
from spinbot.storage.local import LocalStore
from spinbot.tasks.upscale import AIUpscalerParams, FaceTrack, batched, scale_box

FPS = 25
FRAMES = 80
SIDE = 192  # the clip's frame side; the astronaut's face is about 65 px across in it
AUDIO_RATE = 24_000


def speech_like(seconds: float, rate: int) -> np.ndarray:
    """A voiced tone with harmonics, its loudness following a 4 Hz syllable rhythm."""
    t = np.arange(round(seconds * rate)) / rate
    pitch = 2 * np.pi * (140 + 20 * np.sin(2 * np.pi * 0.7 * t)) * t
    voice = sum(np.sin(k * pitch) / k for k in range(1, 6))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * voice * syllables).astype(np.float32)


def write_clip(path: Path, frames: int = FRAMES, side: int = SIDE) -> Path:
    """The astronaut photo's head and shoulders, drifting and bobbing like a talking head, with a speech-like
    track."""
    room = side // 8
    head = data.astronaut()[0:288, 80:368]
    portrait = cv2.resize(head, (side + room, side + room), interpolation=cv2.INTER_AREA)
    audio = speech_like(frames / FPS, AUDIO_RATE)
    with VideoWriter(path, FPS, side, side, audio=(audio, AUDIO_RATE)) as writer:
        for i in range(frames):
            x = round(room / 2 * (1 + np.sin(2 * np.pi * i / 50)))
            y = round(room / 2 * (1 + np.sin(2 * np.pi * i / 37)))
            writer.write(portrait[y : y + side, x : x + side])
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "talk.mp4")


def upscale(clip: Path, store_root: Path, progress: list | None = None, live_output: bool = True, **params):
    """The upscale_video task on `clip`, its work folder under `store_root` (test_live's `encoded` counts only the
    writers under the test's own folder); returns the local path of its video and its output."""
    store = LocalStore(store_root)
    store.upload(clip, "inputs/talk.mp4")
    request = TaskRequest(
        job_id="job",
        node_id="upscale_video",
        task="upscale_video",
        params=params,
        artifacts={"video": "inputs/talk.mp4"},
        live_output=live_output,
    )
    fractions = [] if progress is None else progress
    output = execute_task(
        request, store, report=lambda fraction, message: fractions.append(fraction), workdir_root=store_root
    )
    return store.path(output.artifacts["video"]), output


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


@pytest.fixture(scope="module")
def default_run(clip: Path, tmp_path_factory: pytest.TempPathFactory):
    return upscale(clip, tmp_path_factory.mktemp("store"))


def test_doubles_both_dimensions_and_keeps_every_frame(clip, default_run):
    path, output = default_run
    info = probe(path)
    assert (info.width, info.height) == (2 * SIDE, 2 * SIDE)
    assert info.fps == FPS
    assert sum(1 for _ in iter_frames(path)) == FRAMES
    assert output.meta["frames"] == FRAMES
    assert output.meta["scale"] == 2


def test_keeps_the_audio(default_run):
    info = probe(default_run[0])
    assert info.audio_rate == AUDIO_RATE
    assert abs(info.audio_duration - FRAMES / FPS) <= 1 / FPS


def test_downscaled_back_matches_the_input(clip, default_run):
    scores = [
        psnr(cv2.resize(big, (SIDE, SIDE), interpolation=cv2.INTER_AREA), small)
        for big, small in zip(iter_frames(default_run[0]), iter_frames(clip), strict=True)
    ]
    print(f"PSNR of the upscaled video downscaled back: {np.mean(scores):.2f} dB (min {min(scores):.2f})")
    assert np.mean(scores) > 30


def test_sharpens_edges_but_not_flat_areas(clip, default_run):
    """Against plain bicubic: more contrast on edges, no more noise in the flattest part of the frame."""
    first_in = next(iter_frames(clip))
    first_out = cv2.cvtColor(next(iter_frames(default_run[0])), cv2.COLOR_RGB2GRAY).astype(np.float32)
    bicubic = cv2.resize(first_in, (2 * SIDE, 2 * SIDE), interpolation=cv2.INTER_CUBIC)
    bicubic = cv2.cvtColor(bicubic, cv2.COLOR_RGB2GRAY).astype(np.float32)

    def edge_energy(img: np.ndarray) -> float:
        return float(np.mean(np.abs(cv2.Laplacian(img, cv2.CV_32F))))

    assert edge_energy(first_out) > 1.05 * edge_energy(bicubic)
    # The flattest 16x16 block of the input (background wall), at output scale.
    gray_in = cv2.cvtColor(first_in, cv2.COLOR_RGB2GRAY).astype(np.float32)
    blocks = gray_in[: SIDE // 16 * 16, : SIDE // 16 * 16].reshape(SIDE // 16, 16, SIDE // 16, 16)
    by, bx = np.unravel_index(np.argmin(blocks.std(axis=(1, 3))), (SIDE // 16, SIDE // 16))
    flat = np.s_[by * 32 : (by + 1) * 32, bx * 32 : (bx + 1) * 32]
    print(
        f"edge energy {edge_energy(first_out):.2f} vs bicubic {edge_energy(bicubic):.2f}; flat block std "
        f"{first_out[flat].std():.2f} vs bicubic {bicubic[flat].std():.2f}"
    )
    assert first_out[flat].std() <= bicubic[flat].std() + 0.5


def test_fidelity_weights_the_face_restoration():
    frame = cv2.resize(data.astronaut()[0:288, 80:368], (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    backend = ResampleUpscaler()
    backend.load(AIUpscalerParams())
    (face,) = backend.detect_faces(frame)
    upscaled = backend.upscale_batch([frame])[0]
    big_face = [scale_box(face, 2)]
    changes = {}
    for fidelity in (1.0, 0.5, 0.0):
        restored = backend.restore_faces(upscaled.copy(), big_face, fidelity)
        changes[fidelity] = np.abs(restored.astype(int) - upscaled).astype(float)
    inside = np.s_[big_face[0].y : big_face[0].y + big_face[0].h, big_face[0].x : big_face[0].x + big_face[0].w]
    assert 0 < changes[1.0][inside].mean() < changes[0.5][inside].mean() < changes[0.0][inside].mean()
    assert changes[0.0][: big_face[0].y // 2].max() == 0  # above the face region nothing changes


def test_a_video_without_audio_stays_silent(tmp_path):
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, FPS, 64, 48) as writer:
        for i in range(10):
            writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    path, output = upscale(silent, tmp_path / "store")
    info = probe(path)
    assert (info.width, info.height, info.frames, info.audio_rate) == (128, 96, 10, None)
    assert output.meta["faces_restored"] == 0


def test_restores_the_face_and_reports_what_it_ignores(default_run):
    meta = default_run[1].meta
    assert meta["backend"] == "resample"
    assert meta["faces_restored"] >= FRAMES * 0.8
    assert set(meta["ignored_params"]) == {"model_name_0", "model_name_1", "facedetection"}


def test_frame_load_cap_stops_there_and_trims_the_audio(clip, tmp_path):
    path, output = upscale(clip, tmp_path, frame_load_cap=30)
    info = probe(path)
    assert info.frames == 30 and output.meta["frames"] == 30
    assert abs(info.audio_duration - 30 / FPS) <= 1 / FPS


@pytest.mark.parametrize("batch_size", [1, 7, FRAMES + 20])
def test_batch_size_does_not_change_the_frames(clip, tmp_path, batch_size):
    progress = []
    path, output = upscale(clip, tmp_path, progress, batch_size=batch_size, frame_load_cap=24)
    assert probe(path).frames == output.meta["frames"] == 24
    batches = -(-24 // batch_size)
    assert progress == pytest.approx([min(24, (i + 1) * batch_size) / 24 for i in range(batches)])  # one per batch


def test_x4_model_name_gives_4x(clip, tmp_path):
    path, output = upscale(clip, tmp_path, model_name_0="RealESRGAN_x4plus.pth", frame_load_cap=5)
    info = probe(path)
    assert (info.width, info.height, info.frames) == (4 * SIDE, 4 * SIDE, 5)
    assert output.meta["scale"] == 4


def test_model_name_without_factor_is_a_clear_error(clip, tmp_path):
    with pytest.raises(ParamsError, match="names no upscale factor"):
        upscale(clip, tmp_path, model_name_0="my_upscaler.pth")


@pytest.mark.parametrize(
    "name, factor",
    [
        ("RealESRGAN_x2.pth", 2),
        ("RealESRGAN_x2plus.pth", 2),
        ("RealESRGAN_x4plus_anime_6B.pth", 4),
        ("upscale_models/4x-UltraSharp.pth", 4),
        ("realesr-animevideov3-x3", 3),
        ("2x_Pixel.safetensors", 2),
    ],
)
def test_scale_from_model_name(name, factor):
    assert scale_from_model_name(name) == factor


@pytest.mark.parametrize("name", ["codeformer.pth", "x264_model.pth", "wan2x.pth"])
def test_no_factor_in_name(name):
    with pytest.raises(ParamsError):
        scale_from_model_name(name)


@pytest.mark.parametrize(
    "params",
    [
        {"batch_size": "many"},
        {"batch_size": 0},
        {"codeformer_fidelity": 1.5},
        {"frame_load_cap": -1},
        {"model_name_0": 2},
        {"upscale": True},
    ],
)
def test_ill_typed_params_are_refused(clip, tmp_path, params):
    with pytest.raises(ParamsError):
        upscale(clip, tmp_path, **params)


def test_face_track_reuses_boxes_and_holds_through_misses():
    calls = []
    found = iter([["face"], [], [], [], ["face2"]])

    def detect(frame):
        calls.append(frame)
        return next(found)

    track = FaceTrack(detect, every=3, hold_misses=2)
    boxes = [track.boxes(i) for i in range(13)]
    assert calls == [0, 3, 6, 9, 12]
    assert boxes[:9] == [["face"]] * 9  # two misses are held
    assert boxes[9:12] == [[]] * 3  # the third miss drops the face
    assert boxes[12] == ["face2"]


def test_batched_streams_in_order():
    assert [len(b) for b in batched(iter(range(10)), 4)] == [4, 4, 2]


def test_feathered_mask_is_solid_inside_and_zero_at_the_corners():
    mask = feathered_ellipse(60, 40, 0.3)
    assert mask[30, 20] == pytest.approx(1.0)
    assert mask[0, 0] == 0 and mask[59, 39] == 0
    assert np.all(np.diff(mask[30, :20]) >= 0)  # rises smoothly toward the centre


def test_a_batch_past_batch_bytes_holds_fewer_frames_and_says_so(clip, tmp_path, monkeypatch):
    """batch_size 10,000 held the whole video at once, input and upscaled frames: about 3.8 MiB a 1024x1024 frame,
    28 GiB for 300 s at 25 fps. The frames a batch holds are bounded by their bytes; the video is the same."""
    import spinbot.tasks.upscale as task

    out_frame = (2 * SIDE) ** 2 * 3
    monkeypatch.setattr(task, "BATCH_BYTES", 5 * out_frame + 1, raising=False)  # 5 upscaled frames
    seen = []
    batch = ResampleUpscaler.upscale_batch
    monkeypatch.setattr(
        ResampleUpscaler, "upscale_batch", lambda self, frames: seen.append(len(frames)) or batch(self, frames)
    )
    path, output = upscale(clip, tmp_path, batch_size=10_000, frame_load_cap=24)
    assert probe(path).frames == 24 and max(seen) == 5 and sum(seen) == 24
    assert output.meta["batch_size"] == 5
    assert output.meta["warnings"] == [
        f"batch_size 10000 would hold {10_000 * out_frame / 2**30:.1f} GiB of {2 * SIDE}x{2 * SIDE} frames: "
        "batches of 5 instead (1 GiB of upscaled frames a batch)"
    ]
    assert output.meta["live"]["segments"] == 2  # 13 frames (0.5 s) at least a segment, not 5


def test_the_default_batch_fits_the_largest_talking_head_at_2x():
    from spinbot.tasks.upscale import held_batch

    params = AIUpscalerParams()
    assert held_batch(params, 2 * 1280, 2 * 720).batch_size == params.batch_size == 50  # native 720p, x2
    assert held_batch(params.model_copy(update={"batch_size": 10_000}), 2 * 832, 2 * 480).batch_size == 224
