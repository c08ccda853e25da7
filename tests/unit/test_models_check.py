"""`spinbot models list | check` on a tiny models folder in the seed files' real layouts (spinbot/models/synth),
and on a copy with one fault in each file: one line per problem, exit 1; the worker refuses to start on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import in_ci

if in_ci():
    import torch  # CI installs the gpu extra: its absence is a failure there, not a skip
else:
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("f5_tts")

from safetensors.torch import load_file, save_file

from spinbot.cli import app
from spinbot.models.synth import write_model_folder

TASKS = ["--task", "f5_to_tts", "--task", "infinite_talk", "--task", "upscale_video"]
WAN = "diffusion_models/wanvideo/wan2.1_i2v_720p_14B_bf16.safetensors"
TALK = "diffusion_models/wanvideo/infinite_talk/Wan2_1-InfiniTetalk-Single_fp16.safetensors"
LORA = "loras/wanvideo/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
VAE = "vae/wanvideo/Wan2_1_VAE_bf16.safetensors"
UMT5 = "text_encoders/umt5/umt5-xxl-enc-bf16.safetensors"
CLIP = "clip_vision/wanvideo/clip_vision_h.safetensors"
F5 = "F5-TTS/F5TTS_v1_Base/model_1250000.safetensors"
UPSCALER = "upscale_models/RealESRGAN_x2.pth"
DETECTOR = "facedetection/detection_Resnet50_Final.pth"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    written = write_model_folder(root, scale="tiny", log=lambda message: None)
    assert len(written) == 18 and all(size > 0 for size in written.values())
    return root


def run(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


def linked_copy(source: Path, target: Path) -> Path:
    """A models folder whose files are symlinks to `source`'s: a fault replaces one link by a real file."""
    for path in source.rglob("*"):
        if path.is_file():
            link = target / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return target


def rewrite(root: Path, relpath: str, change) -> None:
    """Load a small safetensors file, change its dict, save it in place of the link."""
    path = root / relpath
    state = load_file(str(path))
    change(state)
    path.unlink()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def test_list_names_every_file_with_its_place_status_size_and_source(tiny, tmp_path):
    shutil.copytree(tiny / "upscale_models", tmp_path / "upscale_models")
    code, lines = run(
        "models", "list", *TASKS, "--models-dir", str(tmp_path), "--set", "upscale_video.model_name_1=mine.pth"
    )
    assert code == 0
    assert lines[0] == f"models folder: {tmp_path} (--models-dir)"
    upscaler = next(line for line in lines if UPSCALER in line)
    assert upscaler.startswith("present") and "(upscale_video.model_name_0)" in upscaler
    assert "hf://ai-forever/Real-ESRGAN@ce23cf9d8a90d83437421b8c37811dec0e522924/RealESRGAN_x2.pth" in upscaler
    assert next(line for line in lines if WAN in line).split()[:3] == ["missing", "32.8", "GB"]
    mine = next(line for line in lines if "facerestore_models/mine.pth" in line)
    assert mine.startswith("missing") and "no known source" in mine
    assert lines[-1] == "18 files, 15 missing; `spinbot models pull` fetches them"  # 2 of the absent are optional


def test_list_says_a_models_folder_is_missing_and_refuses_a_file(tmp_path):
    code, lines = run("models", "list", *TASKS, "--models-dir", str(tmp_path / "nowhere"))
    assert code == 0
    assert lines[0].endswith("nowhere (--models-dir; no such folder yet: `spinbot models pull` makes it)")
    (tmp_path / "afile").write_text("x")
    for command in ("list", "check", "pull"):
        code, lines = run("models", command, *TASKS, "--models-dir", str(tmp_path / "afile"))
        assert code == 2 and lines == [f"error: SPINBOT_MODELS_DIR={tmp_path / 'afile'} is a file, not a folder"]


def test_list_names_a_relative_models_folder_by_its_full_path(tmp_path, monkeypatch, use_settings):
    # SPINBOT_MODELS_DIR=models (the default's form) was shown as "SPINBOT_MODELS_DIR=models": which folder, from
    # where, and is it there?
    monkeypatch.chdir(tmp_path)
    use_settings(models_dir=Path("models"))
    code, lines = run("models", "list", "--task", "f5_to_tts")
    assert code == 0 and lines[0] == (
        f"models folder: {tmp_path / 'models'} (SPINBOT_MODELS_DIR=models; no such folder yet: `spinbot models pull` "
        "makes it)"
    )
    (tmp_path / "models").mkdir()
    code, lines = run("models", "list", "--task", "f5_to_tts")
    assert code == 0 and lines[0] == f"models folder: {tmp_path / 'models'} (SPINBOT_MODELS_DIR=models)"


def test_check_says_which_folder_it_looked_in_and_how_to_fetch_what_is_missing(tmp_path, monkeypatch):
    # "4 problem(s) in the model files of f5_to_tts" under four lines of paths relative to a folder it did not name
    # (SPINBOT_MODELS_DIR's default is ./models, relative to wherever spinbot runs)
    monkeypatch.chdir(tmp_path)
    code, lines = run("models", "check", "--task", "f5_to_tts", "--models-dir", "nowhere")
    assert code == 1 and len(lines) == 5 and all(": missing (" in line for line in lines[:4]), lines
    assert lines[-1].startswith("4 problem(s) in the model files of f5_to_tts (")
    assert lines[-1].endswith(
        f" s); the files are looked up in {tmp_path / 'nowhere'} (SPINBOT_MODELS_DIR or --models-dir, no such folder "
        "yet); 4 file(s) missing: `spinbot models pull` fetches them"
    )


def test_list_refuses_a_node_without_model_files(tiny):
    code, lines = run(
        "models",
        "list",
        "--models-dir",
        str(tiny),
        "--task",
        "upscale_video",
        "--set",
        "script.x=1",
        "--set",
        "nonode.model=x",
    )
    assert code == 2 and "'nonode', which has no model files" in lines[-1]


@pytest.mark.parametrize("command", ["list", "check", "pull"])
def test_a_model_file_outside_the_models_folder_is_refused_in_one_line(tmp_path, command):
    # `models list` reported '../../in/face_x2.png' as present: any file on the machine could be named
    outside = tmp_path / "in" / "face_x2.png"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    models = tmp_path / "md" / "models"
    models.mkdir(parents=True)
    value = "../../in/face_x2.png"
    code, lines = run(
        "models",
        command,
        "--models-dir",
        str(models),
        "--task",
        "upscale_video",
        "--set",
        f"upscale_video.model_name_0={value}",
    )
    assert (code, lines) == (
        2,
        [
            "error: upscale_video.model_name_0: must be a relative path inside upscale_models/ of SPINBOT_MODELS_DIR; "
            f"this one has a '..' part (got '{value}')"
        ],
    )


def test_check_passes_on_the_real_layouts(tiny):
    code, lines = run("models", "check", *TASKS, "--models-dir", str(tiny))
    assert code == 0, lines
    assert lines[-1].startswith("ok: 18 files of f5_to_tts, infinite_talk, upscale_video fit their architectures")


def test_check_names_every_fault_on_its_own_line(tiny, tmp_path):
    root = linked_copy(tiny, tmp_path / "broken")
    rewrite(root, WAN, lambda s: s.pop("blocks.1.ffn.0.weight"))
    rewrite(root, TALK, lambda s: s.update({"blocks.0.audio_cross_attn.q_linear.weight": torch.zeros(8, 8)}))
    rewrite(root, UMT5, lambda s: s.update({"blocks.0.attn.q.weight": s["blocks.0.attn.q.weight"].to(torch.int8)}))
    rewrite(root, F5, lambda s: s.update({"ema_model.transformer.extra": torch.zeros(2)}))
    rewrite(
        root,
        LORA,
        lambda s: s.update(
            {
                "diffusion_model.blocks.9.self_attn.q.lora_down.weight": torch.zeros(4, 8),
                "diffusion_model.blocks.9.self_attn.q.lora_up.weight": torch.zeros(8, 4),
            }
        ),
    )
    (root / VAE).unlink()
    clip = root / CLIP
    data = clip.read_bytes()[:1000]
    clip.unlink()
    clip.write_bytes(data)  # a download cut short
    for relpath, wrapper in ((UPSCALER, "params_ema"), (DETECTOR, None)):
        state = torch.load(root / relpath, weights_only=True)
        inner = state[wrapper] if wrapper else state
        inner.pop(sorted(inner)[3])
        (root / relpath).unlink()
        torch.save(state, root / relpath)

    code, lines = run("models", "check", *TASKS, "--models-dir", str(root))

    assert code == 1
    expected = [
        f"{WAN}: missing key 'blocks.1.ffn.0.weight' (shape [64, 256])",
        f"{TALK}: key 'blocks.0.audio_cross_attn.q_linear.weight' has shape [8, 8], the model needs [256, 256]",
        f"{UMT5}: key 'blocks.0.attn.q.weight' is I8, the loader needs BF16, F16, F32, F64",
        f"{F5}: unexpected key 'ema_model.transformer.extra'",
        (
            f"{LORA}: 'diffusion_model.blocks.9.self_attn.q.lora_down.weight' targets 'blocks.9.self_attn.q.weight', "
            "which the model does not have"
        ),
    ]
    for line in expected:
        assert line in lines, (line, lines)
    assert any(line.startswith(f"{CLIP}: not a readable safetensors file") for line in lines)
    assert any(line.startswith(f"{UPSCALER}: missing key") for line in lines)
    assert any(line.startswith(f"{DETECTOR}: missing key 'module.") for line in lines)
    assert f"{VAE}: missing (vae_model)" in lines  # the other infinite_talk files are checked all the same
    assert "9 problem(s) in the model files of f5_to_tts, infinite_talk, upscale_video (" in lines[-1]
    assert len(lines) == len(expected) + 4 + 1  # one line per fault, then the count


def test_the_worker_refuses_to_start_on_files_that_do_not_fit(tmp_path, use_settings, spinbot_env):
    use_settings(models_dir=tmp_path, tts_backend="native", redis_url="redis://127.0.0.1:9/0")
    code, lines = run("worker", "--queues", "gpu")
    assert code == 2
    assert "refusing to start: 4 problem(s) in the model files of f5_to_tts" in lines[0]
    assert any("F5-TTS/F5TTS_v1_Base/model_1250000.safetensors: missing (model)" in line for line in lines)


def test_a_worker_that_serves_no_native_task_starts_without_model_files(tmp_path, use_settings, spinbot_env):
    from spinbot.models.selection import startup_problems
    from spinbot.settings import get_settings

    use_settings(models_dir=tmp_path, tts_backend="native", redis_url="redis://127.0.0.1:9/0")
    assert startup_problems(get_settings(), ["cpu"]) == ([], [])  # f5_to_tts runs on the gpu queue


@pytest.mark.parametrize(
    "relpath, text, expected",
    [
        # Vocos.from_hparams' KeyError / TypeError, then yaml's ParserError, were tracebacks
        ("F5-TTS/vocos-mel-24khz/config.yaml", "junk\n", "not a Vocos config (TypeError: "),
        ("F5-TTS/vocos-mel-24khz/config.yaml", "a: 1\n", "not a Vocos config (KeyError: 'feature_extractor')"),
        ("F5-TTS/vocos-mel-24khz/config.yaml", "a: [\n", "not a Vocos config (ParserError: "),
        # f5-tts's own config, optional beside the checkpoint: "'str' object has no attribute 'get'" traceback
        ("F5-TTS/F5TTS_v1_Base/config.yaml", "model: 3\n", "is not an f5-tts config (its model section is no mapping)"),
        ("F5-TTS/F5TTS_v1_Base/config.yaml", "model: [\n", "is not YAML ("),
    ],
)
def test_a_config_that_is_not_one_is_a_problem_line_not_a_traceback(tiny, tmp_path, relpath, text, expected):
    root = linked_copy(tiny, tmp_path / "configs")
    path = root / relpath
    path.unlink(missing_ok=True)
    path.write_text(text)
    code, lines = run("models", "check", "--task", "f5_to_tts", "--models-dir", str(root))
    assert code == 1, lines
    assert len(lines) == 2 and lines[0].startswith(f"{relpath}: ") and expected in lines[0], lines
    assert lines[1].startswith("1 problem(s) in the model files of f5_to_tts")


def test_a_file_that_is_no_torch_checkpoint_says_what_torch_load_raised(tiny, tmp_path):
    # torch's legacy loader raises KeyError(<a number read from the junk>): the line said "... checkpoint: 174812789"
    root = linked_copy(tiny, tmp_path / "junk")
    (root / UPSCALER).unlink()
    (root / UPSCALER).write_text("junk\n")
    code, lines = run("models", "check", "--task", "upscale_video", "--models-dir", str(root))
    assert code == 1 and lines[0].startswith(f"{UPSCALER}: not a readable torch checkpoint: KeyError: "), lines


def test_another_models_file_under_the_name_is_one_line_not_one_per_key(tiny, tmp_path):
    # the VAE saved as clip_vision_h.safetensors printed 519 lines of "missing key 'vision_model....'"
    root = linked_copy(tiny, tmp_path / "swapped")
    (root / CLIP).unlink()
    shutil.copy(tiny / VAE, root / CLIP)
    code, lines = run("models", "check", "--task", "infinite_talk", "--models-dir", str(root))
    assert code == 1
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{CLIP}: holds none of the 519 keys the model needs ('vision_model.")
    assert "another model's: the wrong file under this name?" in lines[0]
    vae_key = sorted(load_file(str(tiny / VAE)))[0]
    assert f"'{vae_key}'" in lines[0]  # the keys as the file names them, not as the loader renamed them


def test_many_missing_keys_of_one_file_are_one_line(tiny, tmp_path):
    root = linked_copy(tiny, tmp_path / "cut")
    dropped = sorted(k for k in load_file(str(tiny / WAN)) if k.startswith("blocks.1.self_attn."))
    assert len(dropped) > 5
    rewrite(root, WAN, lambda s: [s.pop(k) for k in dropped])
    code, lines = run("models", "check", "--task", "infinite_talk", "--models-dir", str(root))
    assert code == 1
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{WAN}: {len(dropped)} missing keys ('{dropped[0]}', '{dropped[1]}', '{dropped[2]}'")
    assert lines[0].endswith(f" and {len(dropped) - 3} more)")


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"GGUF\x03\x00\x00\x00" + bytes(64), "a GGUF file (a quantized model for ComfyUI-GGUF or llama.cpp)"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n", "a Git LFS pointer, not the file"),
        (b"<!DOCTYPE html><html><body>model</body></html>", "an HTML page, not a model file"),
        (b"", "an empty file"),
    ],
)
def test_a_file_of_another_format_says_what_it_is(tiny, tmp_path, content, expected):
    # was "not a readable safetensors file: Error while deserializing header: header too large"
    root = linked_copy(tiny, tmp_path / "format")
    (root / VAE).unlink()
    (root / VAE).write_bytes(content)
    code, lines = run("models", "check", "--task", "infinite_talk", "--models-dir", str(root))
    assert code == 1
    assert lines[0].startswith(f"{VAE}: not a readable safetensors file: {expected}"), lines


def test_a_missing_file_says_what_is_at_or_near_its_place(tiny, tmp_path):
    # each case was "missing (wan_video_model)" and nothing more
    root = linked_copy(tiny, tmp_path / "near")
    wan = root / WAN
    wan.unlink()
    wan.symlink_to(tmp_path / "gone.safetensors")  # a symlink into a disk that is not mounted
    code, lines = run("models", "check", "--task", "infinite_talk", "--models-dir", str(root))
    assert code == 1
    assert lines[0] == f"{WAN}: missing (wan_video_model); it is a broken symlink (to {tmp_path / 'gone.safetensors'})"
    code, lines = run("models", "list", "--task", "infinite_talk", "--models-dir", str(root))
    assert any(line.startswith("missing") and "[it is a broken symlink (to " in line for line in lines), lines

    wan.unlink()
    shutil.copy(tiny / WAN, root / "diffusion_models" / Path(WAN).name)  # ComfyUI's folder, without wanvideo/
    code, lines = run("models", "check", "--task", "infinite_talk", "--models-dir", str(root))
    assert lines[0] == (
        f"{WAN}: missing (wan_video_model); a file of this name is at diffusion_models/{Path(WAN).name}: move it here"
    )

    (root / "diffusion_models" / Path(WAN).name).rename(wan.parent / "wan2.1_i2v_480p_14B_bf16.safetensors")
    code, lines = run("models", "check", "--task", "infinite_talk", "--models-dir", str(root))
    assert lines[0] == (
        f"{WAN}: missing (wan_video_model); diffusion_models/wanvideo/ holds wan2.1_i2v_480p_14B_bf16.safetensors "
        "(to use it: --set infinite_talk.wan_video_model=wanvideo/wan2.1_i2v_480p_14B_bf16.safetensors)"
    )
    value = "wanvideo/wan2.1_i2v_480p_14B_bf16.safetensors"
    code, lines = run(
        "models",
        "check",
        "--task",
        "infinite_talk",
        "--set",
        f"infinite_talk.wan_video_model={value}",
        "--models-dir",
        str(root),
    )
    assert code == 0, lines  # the hint's --set works as printed


def test_a_cut_download_refuses_the_job_at_submission_not_at_its_node(tiny, tmp_path, use_settings, spinbot_env):
    # was: the speech was made, then infinite_talk failed with "Error while deserializing header: incomplete
    # metadata, file not fully covered"
    from spinbot.samples import portrait_path, voice_path

    root = linked_copy(tiny, tmp_path / "cut")
    (root / CLIP).unlink()
    (root / CLIP).write_bytes((tiny / CLIP).read_bytes()[:1_000_000])
    use_settings(models_dir=root, talk_backend="native")
    image, voice = str(portrait_path(tmp_path)), str(voice_path())
    code, lines = run("run", "--prompt", "p", "--image", image, "--voice", voice)
    assert code == 2, lines
    size = (tiny / CLIP).stat().st_size
    assert lines == [
        f"error: infinite_talk: the native backend cannot use a model file in SPINBOT_MODELS_DIR={root}: {CLIP}: "
        f"not a readable safetensors file: cut short: 1,000,000 bytes of the {size:,} its header describes (an "
        "interrupted download?) (`spinbot models check` checks them all)"
    ]
    from spinbot.control.runner import Runner

    assert Runner().jobs.list()[0] == []  # nothing stored
