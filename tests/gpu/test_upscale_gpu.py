"""The native upscale_video backend on a CUDA GPU with the real-size architectures (random weights).

Run on the GPU machine: python -m pytest -q -m gpu tests/gpu/test_upscale_gpu.py
Skipped where torch.cuda.is_available() is false (CI has no GPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

WIDTH, HEIGHT, FPS = 832, 480, 25
FACE_HEAD = (2, 0)  # the detector's 256 px anchors report a face (see tests/unit/test_upscale_native.py)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spinbot.models.synth.upscale import write_models

    return write_models(tmp_path_factory.mktemp("models"), num_feat=64, num_block=23, face=FACE_HEAD)


@pytest.fixture
def backend(models_dir: Path, monkeypatch: pytest.MonkeyPatch, spinbot_env):
    from spinbot.backends.upscale.native import NativeConfig, NativeUpscaler
    from spinbot.settings import reset_settings
    from spinbot.tasks.upscale import AIUpscalerParams

    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(models_dir))
    reset_settings()
    # Eager here (compile=False): test_compiled_fast_path_matches_eager compiles once on its own.
    upscaler = NativeUpscaler(config=NativeConfig(max_faces=1, compile=False))
    upscaler.load(AIUpscalerParams(batch_size=8))
    return upscaler


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth random scene drifting sideways, 832x480."""
    import cv2

    rng = np.random.default_rng(seed)
    scene = cv2.resize(
        rng.integers(0, 256, (60, 140, 3), dtype=np.uint8), (WIDTH + 4 * count, HEIGHT), interpolation=cv2.INTER_CUBIC
    )
    return [np.ascontiguousarray(scene[:, 4 * i : 4 * i + WIDTH]) for i in range(count)]


def test_real_size_models_run_in_half_precision(backend):
    models = backend.models
    assert backend.device.type == "cuda" and backend.scale == 2
    assert models.dtype == torch.float16
    assert next(models.detector.model.parameters()).dtype == torch.float16
    assert models.restorer_autocast == torch.bfloat16
    assert sum(p.numel() for p in models.upscaler.model.parameters()) > 16e6  # RRDBNet 23 blocks, 64 features


def test_retinaface_backbone_has_torchvision_resnet50_names(backend):
    torchvision = pytest.importorskip("torchvision")
    expected = {f"body.{k}" for k in torchvision.models.resnet50().state_dict() if not k.startswith("fc.")}
    ours = {k for k in backend.models.detector.model.state_dict() if k.startswith("body.")}
    assert ours == expected


def test_half_precision_upscale_matches_float32(backend, models_dir):
    """The float16 upscaler against a float32 copy of it (TF32 off), on the raw output before clamping: the
    relative error of half-precision arithmetic (about 1e-3), and no overflow."""
    import copy

    frame = torch.from_numpy(frames(1)[0]).cuda().permute(2, 0, 1)[None].float() / 255
    half = backend.models.upscaler.model
    full = copy.deepcopy(half).float()
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            reference = full(frame.contiguous(memory_format=torch.channels_last)).double()
            out = half(frame.half().contiguous(memory_format=torch.channels_last)).double()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    error = float((out - reference).norm() / reference.norm())
    print(f"float16 upscaler vs float32: relative error {error:.2e}")
    assert torch.isfinite(out).all() and error < 1e-2


def test_stream_doubles_every_frame_and_restores_one_face_each(backend):
    clip = frames(20)
    plain = backend.upscale_batch(clip[:2])
    out = list(backend.stream(iter(clip), fidelity=0.5))
    assert len(out) == 20
    assert all(frame.shape == (2 * HEIGHT, 2 * WIDTH, 3) and frame.dtype == np.uint8 for frame, _ in out)
    assert [count for _, count in out] == [1] * 20
    for (restored, _), upscaled in zip(out, plain):
        changed = np.any(restored != upscaled, axis=2)
        assert 0.02 < changed.mean() < 0.5  # one face region, not the whole frame


def test_end_to_end_video_with_audio(backend, tmp_path):
    from spinbot.media.video import VideoWriter, iter_frames, probe, read_audio

    source = tmp_path / "in.mp4"
    tone = (0.1 * np.sin(np.arange(24_000 * 2) / 24_000 * 2 * np.pi * 220)).astype(np.float32)
    with VideoWriter(source, FPS, WIDTH, HEIGHT, audio=(tone[: round(30 / FPS * 24_000)], 24_000)) as writer:
        for frame in frames(30):
            writer.write(frame)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, FPS, 2 * WIDTH, 2 * HEIGHT, audio=read_audio(source)) as writer:
        for frame, _ in backend.stream(iter_frames(source), fidelity=1.0):
            writer.write(frame)
    info = probe(out)
    assert (info.width, info.height, info.frames) == (2 * WIDTH, 2 * HEIGHT, 30)
    assert abs(info.audio_duration - 30 / FPS) <= 1 / FPS
    assert sum(1 for _ in iter_frames(out)) == 30


def test_compiled_fast_path_matches_eager(backend):
    """config.compile (the default on CUDA): the stream runs torch.compile'd models. Outside the faces only the
    upscaler acts, and there the frames agree with eager ones to rounding; inside, a random CodeFormer's
    codebook choices can flip on rounding differences, so only a loose bound holds."""
    import time
    from dataclasses import replace

    from spinbot.backends.upscale.face_alignment import paste_region, similarity, upscaled_points
    from spinbot.backends.upscale.native import NativeUpscaler
    from spinbot.tasks.upscale import AIUpscalerParams

    compiled = NativeUpscaler(config=replace(backend.config, compile=True))
    compiled.load(AIUpscalerParams(batch_size=8))
    clip = frames(11)  # a full batch and a shorter one (3 frames), which must not compile again
    started = time.perf_counter()
    fast = list(compiled.stream(iter(clip), fidelity=0.5))
    print(f"compiled stream, first call (compiles): {time.perf_counter() - started:.1f} s")
    eager = list(backend.stream(iter(clip), fidelity=0.5))
    assert [n for _, n in fast] == [n for _, n in eager] == [1] * 11
    faces = backend._detect(backend._to_device(torch.from_numpy(np.stack(clip))))
    for (a, _), (b, _), found in zip(fast, eager, faces):
        matrix = similarity(upscaled_points(found.landmarks[0], 2), backend._template())
        x0, y0, x1, y1 = paste_region(matrix, 512, a.shape[:2])
        outside = np.ones(a.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        diff = np.abs(a.astype(int) - b)
        print(
            f"compiled vs eager: {diff[outside].mean():.3f} grey levels outside the face, "
            f"{diff[~outside].mean():.2f} inside"
        )
        assert diff[outside].mean() < 0.5 and diff[~outside].mean() < 25
