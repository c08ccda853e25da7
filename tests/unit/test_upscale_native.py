"""The native upscale_video backend on the CPU, with random-weight checkpoints in the official formats.

The checkpoints are built here, key by key, as the released files are laid out:
- `RealESRGAN_x2plus.pth`: basicsr's RRDBNet under `params_ema` (conv_first on the 2x2 pixel-unshuffled input,
  body.N.rdbM.convK, conv_body, conv_up1/2, conv_hr, conv_last), with fewer blocks and features to stay small;
- `codeformer.pth`: CodeFormer under `params_ema`, full size (spandrel derives nothing from a smaller one: its
  dimensions are fixed), from the architecture's own module names;
- `detection_Resnet50_Final.pth`: RetinaFace-ResNet50 with DataParallel's `module.` prefix, its key names written
  out from the layout of torchvision's ResNet-50 and Pytorch_Retinaface's heads (not from our module, so that a
  naming slip there fails here).
A random detector finds random faces, so detection is controlled through the detector's own weights and the
threshold: in the `face` checkpoint the heads' weights are zero and their biases make one anchor size a face
with a fixed landmark layout (every frame then has faces, deterministically, and the full network still runs);
a confidence threshold of 1.0 finds nothing. CodeFormer at full size costs about 10 s per face on two cores, so
only three tests restore a face.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import in_ci

if any(importlib.util.find_spec(name) is None for name in ("torch", "spandrel", "spandrel_extra_arches")):
    message = "the gpu extra (torch, spandrel, spandrel_extra_arches) is not installed: pip install -e '.[gpu]'"
    pytest.fail(message, pytrace=False) if in_ci() else pytest.skip(message, allow_module_level=True)

import torch

from spinbot.backends.upscale import face_alignment, model_loading, native
from spinbot.backends.upscale.face_alignment import similarity
from spinbot.backends.upscale.native import NativeConfig, NativeUpscaler
from spinbot.backends.upscale.prefetch import prefetch
from spinbot.errors import BackendUnavailable, ParamsError
from spinbot.models.synth.upscale import retinaface_state_dict, write_models

SIDE_W, SIDE_H = 96, 64  # input frame size in the CPU tests
FACE_LEVEL, FACE_ANCHOR = 1, 0  # the 64 px anchors (stride 16) are faces in the `face` detector checkpoint


# ---- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    started = time.perf_counter()
    root = write_models(tmp_path_factory.mktemp("models"), face=(FACE_LEVEL, FACE_ANCHOR))
    print(f"checkpoints written in {time.perf_counter() - started:.1f} s")
    return root


@pytest.fixture
def use_models(models_dir: Path, use_settings, spinbot_env) -> Path:
    use_settings(models_dir=models_dir, upscale_backend="native")
    return models_dir


def frame_with_texture(seed: int = 0, width: int = SIDE_W, height: int = SIDE_H) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(x / 7.0)[..., None] * np.cos(y / 5.0)[..., None] * np.array([1.0, 0.7, 0.4])
    return np.clip(base + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)


def loaded(config: NativeConfig | None = None, **params) -> NativeUpscaler:
    from spinbot.tasks.upscale import AIUpscalerParams

    backend = NativeUpscaler(device="cpu", config=config)
    backend.load(AIUpscalerParams(**params))
    return backend


NO_FACES = NativeConfig(face_confidence=1.0)
ONE_FACE = NativeConfig(max_faces=1)


# ---- loading --------------------------------------------------------------------------------------------------


def test_spandrel_reads_the_x2plus_layout_as_realesrgan_x2(use_models):
    spandrel = model_loading.import_spandrel()
    descriptor = spandrel.ModelLoader("cpu").load_from_file(use_models / "upscale_models" / "RealESRGAN_x2.pth")
    assert descriptor.architecture.id == "ESRGAN"
    assert descriptor.scale == 2 and "unshuffle" in descriptor.tags
    assert descriptor.model.shuffle_factor == 2  # the 12-channel pixel-unshuffled input
    assert descriptor.supports_half


def test_the_three_checkpoints_load_through_the_backend(use_models):
    started = time.perf_counter()
    backend = loaded()
    print(f"loaded in {time.perf_counter() - started:.1f} s")
    assert backend.scale == 2
    assert backend.models.restorer.__class__.__name__ == "CodeFormer"
    assert backend.models.dtype == torch.float32  # CPU: no half precision
    # The detector took every key of the official layout (strict load, `module.` prefix stripped).
    official = {k.removeprefix("module.") for k in retinaface_state_dict()}
    assert set(backend.models.detector.model.state_dict()) == official


def test_models_are_cached_between_loads(use_models):
    first, second = loaded(), loaded()
    assert first.models.upscaler is second.models.upscaler
    assert first.models.restorer is second.models.restorer
    assert first.models.detector.model is second.models.detector.model


@pytest.mark.parametrize(
    "param, value, folder",
    [
        ("model_name_0", "RealESRGAN_x4plus.pth", "upscale_models"),
        ("model_name_1", "codeformer-v2.pth", "facerestore_models"),
    ],
)
def test_a_missing_file_is_one_clear_line(use_models, param, value, folder):
    with pytest.raises(BackendUnavailable) as err:
        loaded(**{param: value})
    message = str(err.value)
    assert "\n" not in message
    assert value in message and str(use_models / folder / value) in message


def test_a_missing_detector_file_names_it(use_models, tmp_path, use_settings):
    write_dir = tmp_path / "models"
    (write_dir / "upscale_models").mkdir(parents=True)
    (write_dir / "facerestore_models").mkdir()
    for folder, name in (("upscale_models", "RealESRGAN_x2.pth"), ("facerestore_models", "codeformer.pth")):
        (write_dir / folder / name).symlink_to(use_models / folder / name)
    use_settings(models_dir=write_dir)
    expected = "detection_Resnet50_Final.pth not found: looked for .*facedetection"
    with pytest.raises(BackendUnavailable, match=expected):
        loaded()


def test_an_unknown_detector_is_refused(use_models):
    """By the params model at submission, and again by the backend (params that reach a worker unvalidated, e.g.
    from a newer control plane)."""
    from pydantic import ValidationError

    from spinbot.tasks.upscale import AIUpscalerParams

    with pytest.raises(ValidationError, match="retinaface_resnet50"):
        AIUpscalerParams(facedetection="YOLOv5l")
    with pytest.raises(ParamsError, match="retinaface_resnet50"):
        NativeUpscaler(device="cpu").load(AIUpscalerParams.model_construct(facedetection="YOLOv5l"))


def test_a_codeformer_file_that_is_an_upscaler_is_refused(use_models):
    shutil.copy(use_models / "upscale_models" / "RealESRGAN_x2.pth", use_models / "facerestore_models" / "esrgan.pth")
    try:
        with pytest.raises(ParamsError, match="CodeFormer"):
            loaded(model_name_1="esrgan.pth")
    finally:
        (use_models / "facerestore_models" / "esrgan.pth").unlink()


# ---- pixels ---------------------------------------------------------------------------------------------------


def test_detector_finds_the_planted_faces_and_the_threshold_removes_them(use_models):
    frame = frame_with_texture()
    assert loaded(ONE_FACE).detect_faces(frame)  # the `face` heads make 64 px anchors faces
    boxes = loaded().detect_faces(frame)
    assert all(56 <= b.w <= 72 and 56 <= b.h <= 72 for b in boxes)
    assert loaded(NO_FACES).detect_faces(frame) == []


def test_upscale_batch_doubles_every_frame(use_models):
    backend = loaded(NO_FACES)
    frames = [frame_with_texture(i) for i in range(3)]
    out = backend.upscale_batch(frames)
    assert len(out) == 3
    assert all(o.shape == (2 * SIDE_H, 2 * SIDE_W, 3) and o.dtype == np.uint8 for o in out)
    assert not np.array_equal(out[0], out[1])


def test_stream_without_faces_is_the_plain_upscale_in_order(use_models):
    backend = loaded(NO_FACES, batch_size=2)
    frames = [frame_with_texture(i) for i in range(5)]
    streamed = list(backend.stream(iter(frames), fidelity=0.5))
    assert [n for _, n in streamed] == [0] * 5  # restoration skipped
    for (got, _), expected in zip(streamed, backend.upscale_batch(frames), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_stream_restores_the_face_inside_its_region_only(use_models):
    backend = loaded(ONE_FACE, batch_size=1)
    frame = frame_with_texture(3)
    plain = backend.upscale_batch([frame])[0]
    started = time.perf_counter()
    ((restored, count),) = list(backend.stream(iter([frame]), fidelity=0.5))
    print(f"one frame with one face restored in {time.perf_counter() - started:.1f} s")
    assert count == 1 and restored.shape == plain.shape
    changed = np.any(restored != plain, axis=2)
    assert changed.any()
    # Nothing changes outside the region the aligned crop covers.
    faces = backend._detect(backend._to_device(torch.from_numpy(frame[None])))[0]
    matrix = similarity(face_alignment.upscaled_points(faces.landmarks[0], 2), backend._template())
    x0, y0, x1, y1 = face_alignment.paste_region(matrix, 512, plain.shape[:2])
    outside = changed.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()


def test_protocol_path_restores_the_face_it_detected(use_models):
    """detect_faces + upscale_batch + restore_faces (the task's batch-by-batch calls): the face found is restored
    through its landmarks, inside the region its aligned crop covers."""
    backend = loaded(ONE_FACE, batch_size=1)
    frame = frame_with_texture(3)
    (box,) = backend.detect_faces(frame)
    upscaled = backend.upscale_batch([frame])[0]
    big = type(box)(box.x * 2, box.y * 2, box.w * 2, box.h * 2)
    restored = backend.restore_faces(upscaled.copy(), [big], fidelity=0.5)
    changed = np.any(restored != upscaled, axis=2)
    assert changed.any()
    matrix = similarity(backend._landmarks[big], backend._template())
    x0, y0, x1, y1 = face_alignment.paste_region(matrix, 512, upscaled.shape[:2])
    changed[y0:y1, x0:x1] = False
    assert not changed.any()


def test_a_batchs_faces_are_cropped_and_restored_a_few_frames_at_a_time(use_models, monkeypatch):
    """Attack, 2026-12-05: every face of a batch was cropped at once, each from a float32 copy of its whole upscaled
    frame: a group photo's 8 faces a frame in a batch of 224 frames of 1664x960 (batch_size raised to its 1 GiB
    cap) were 34 GB of copies and 5 GB of crops on the device. Now the faces go a few frames at a time (a frame's
    faces together, so no crop sees another face of its frame restored), with the same pixels."""
    backend = loaded(NativeConfig(faces_per_forward=2))
    frames = backend._to_device(torch.from_numpy(np.stack([frame_with_texture(i) for i in range(4)])))
    upscaled = backend._upscale(frames)
    transforms = [
        (i, similarity(face_alignment.upscaled_points(points, 2), backend._template()))
        for i, found in enumerate(backend._detect(frames))
        for points in found.landmarks[:2]
    ]
    assert len(transforms) == 8  # two faces in each frame
    monkeypatch.setattr(backend, "_run_restorer", lambda crops, fidelity, fast=False: 1 - crops)  # CodeFormer: 10 s
    cropped: list[list[int]] = []
    crop = backend._crop
    monkeypatch.setattr(
        backend, "_crop", lambda f, indices, thetas: cropped.append(indices) or crop(f, indices, thetas)
    )
    chunked = upscaled.clone()
    backend._restore(chunked, transforms, 0.5)
    assert cropped == [[0, 0], [1, 1], [2, 2], [3, 3]]
    whole = upscaled.clone()
    backend.config = NativeConfig(faces_per_forward=100)
    backend._restore(whole, transforms, 0.5)
    assert cropped[-1] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not torch.equal(whole, upscaled)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    # a frame with more faces than a group holds is one group of its own
    assert face_alignment.face_groups([0, 0, 0, 1, 2, 2], 2) == [range(3), range(3, 4), range(4, 6)]


# ---- the task end to end --------------------------------------------------------------------------------------


def test_task_doubles_size_keeps_frames_and_audio_and_skips_faceless_frames(use_models, tmp_path, monkeypatch):
    from tests.unit.test_upscale import upscale, write_clip

    monkeypatch.setattr(native, "DEFAULT_CONFIG", NO_FACES)  # the registry builds the backend with defaults
    clip = write_clip(tmp_path / "clip.mp4", frames=12, side=64)
    path, output = upscale(clip, tmp_path / "store", batch_size=5)
    from spinbot.media.video import iter_frames, probe

    info = probe(path)
    assert (info.width, info.height) == (128, 128)
    assert sum(1 for _ in iter_frames(path)) == 12 == output.meta["frames"]
    assert abs(info.audio_duration - 12 / 25) <= 1 / 25
    assert output.meta["backend"] == "native" and output.meta["scale"] == 2
    assert output.meta["faces_restored"] == 0
    assert output.meta["ignored_params"] == {}


# ---- geometry -------------------------------------------------------------------------------------------------


def test_similarity_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = np.random.default_rng(0).uniform(0, 100, (5, 2))
    matrix = similarity(points, points @ rotation.T + shift)
    np.testing.assert_allclose(matrix, np.hstack([rotation, shift[:, None]]), atol=1e-9)


def test_crop_then_paste_round_trips_a_frame_region():
    """Sampling the crop through crop_theta and pasting it back through paste_theta returns the frame's pixels
    (up to bilinear blur) where the mask is solid."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    frame = F.interpolate(torch.rand(1, 3, 24, 32, generator=g), size=(96, 128), mode="bilinear")
    landmarks = np.array([[50.0, 40], [78, 42], [64, 56], [54, 70], [75, 71]])
    matrix = similarity(landmarks, face_alignment.FFHQ_TEMPLATE_512)
    theta = torch.from_numpy(face_alignment.crop_theta(matrix, (96, 128), 512)).float()[None]
    crop = F.grid_sample(frame, F.affine_grid(theta, [1, 3, 512, 512], align_corners=False), align_corners=False)
    region = face_alignment.paste_region(matrix, 512, (96, 128))
    x0, y0, x1, y1 = region
    back_theta = torch.from_numpy(face_alignment.paste_theta(matrix, region, 512)).float()[None]
    grid = F.affine_grid(back_theta, [1, 3, y1 - y0, x1 - x0], align_corners=False)
    back = F.grid_sample(crop, grid, align_corners=False)
    mask = F.grid_sample(face_alignment.feathered_square(512, 0.04, 0.12)[None, None], grid, align_corners=False)
    solid = mask[0, 0] > 0.99
    assert solid.sum() > 100
    error = (back - frame[..., y0:y1, x0:x1]).abs()[0].amax(0)[solid]
    assert error.max() < 0.03


def test_feathered_square_is_zero_at_the_border_and_one_inside():
    mask = face_alignment.feathered_square(512, 0.04, 0.12)
    assert mask[0].max() == 0 and mask[:, -1].max() == 0
    assert mask[256, 256] == 1
    assert torch.all(torch.diff(mask[256, :256]) >= 0)


def test_upscaled_points_keep_pixel_centres():
    # Pixel 0's centre in a 2x frame lies between output pixels 0 and 1.
    np.testing.assert_allclose(
        face_alignment.upscaled_points(np.array([[0.0, 0.0], [10.0, 4.0]]), 2), [[0.5, 0.5], [20.5, 8.5]]
    )


def test_tiled_upscale_matches_whole_frame_upscale_away_from_seams(use_models):
    whole = loaded(NO_FACES)
    tiled = loaded(dataclasses.replace(NO_FACES, tile=48, tile_overlap=16))
    frame = frame_with_texture(5)
    a, b = whole.upscale_batch([frame])[0], tiled.upscale_batch([frame])[0]
    assert a.shape == b.shape
    # With 16 px of context the tiles see what the whole frame sees for a 2-block network's receptive field.
    assert np.abs(a.astype(int) - b).max() <= 2


def test_codebook_lookup_gives_codeformers_own_codes(use_models):
    """The gather that replaces CodeFormer's one-hot product returns the same code vectors."""
    restorer = loaded(NO_FACES).models.restorer
    original = type(restorer.quantize).get_codebook_feat
    indices = torch.randint(0, 1024, (2 * 256, 1))
    expected = original(restorer.quantize, indices, [2, 16, 16, 256])
    np.testing.assert_array_equal(model_loading.codebook_lookup(restorer.quantize, indices, [2, 16, 16, 256]), expected)


def test_pipeline_raises_errors_from_its_threads():
    def frames():
        yield np.zeros((4, 4, 3), np.uint8)
        raise ValueError("decoder broke")

    with pytest.raises(ValueError, match="decoder broke"):
        list(prefetch(frames(), 2, lambda batch: batch, group=1))


def test_pipeline_stops_its_threads_when_closed_early():
    import threading

    produced = []

    def frames():
        for i in range(1000):
            produced.append(i)
            yield i

    before = threading.active_count()
    stream = prefetch(prefetch(frames(), 2, lambda x: x, group=4), 2, lambda b: b)
    assert next(stream) == [0, 1, 2, 3]
    stream.close()
    assert threading.active_count() == before
    assert len(produced) < 100
