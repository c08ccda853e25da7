import pytest

from spinbot.errors import ParamsError, echo
from spinbot.tasks.base import validate_params
from spinbot.tasks.model_files import MODEL_SLOTS, missing_model
from spinbot.tasks.talk import InfiniteTalkParams
from spinbot.tasks.tts import TextToSpeechParams
from spinbot.tasks.upscale import AIUpscalerParams


def test_text_to_speech_defaults_match_the_seed_table():
    p = TextToSpeechParams()
    assert p.model == "F5TTS_v1_Base"
    assert p.device == "cuda"
    assert p.temperature == 0.8
    assert p.speed == 1
    assert p.target_rms == 0.1
    assert p.cross_fade_duration == 0.15
    assert p.nfe_step == 32
    assert p.cfg_strength == 2
    assert p.narrator_voice is None  # "(from params)": the job's uploaded voice
    assert p.ref_text is None  # "(from params)": the job's ref_text
    assert p.seed == 290381
    assert set(TextToSpeechParams.model_fields) == {
        "model",
        "device",
        "temperature",
        "speed",
        "target_rms",
        "cross_fade_duration",
        "nfe_step",
        "cfg_strength",
        "narrator_voice",
        "ref_text",
        "seed",
    }


def test_infinite_talk_defaults_match_the_seed_table():
    p = InfiniteTalkParams()
    assert p.infinitetalk_model.startswith("wanvideo/infinite_talk/")
    assert p.vae_model == "wanvideo/Wan2_1_VAE_bf16.safetensors"
    assert p.t5_text_encoder_model == "umt5/umt5-xxl-enc-bf16.safetensors"
    assert p.wav2vec_model == "TencentGameMate/chinese-wav2vec2-base"
    assert p.lora_model.startswith("wanvideo/lightx2v_I2V")
    assert p.clip_vision_model == "wanvideo/clip_vision_h.safetensors"
    assert p.wan_video_model == "wanvideo/wan2.1_i2v_720p_14B_bf16.safetensors"
    assert p.fps == 25
    assert p.positive_prompt.startswith("a man is talking")
    assert p.negative_prompt.startswith("blurry, distorted")
    assert p.sampling_steps == 6
    assert p.sampling_cfg == 1.0
    assert p.sampling_scheduler == "dpm++_sde"
    assert p.frame_window_size == 81
    assert p.motion_frame == 25
    assert p.normalize_loudness is True
    assert p.audio_scale == 1.6
    assert p.audio_cfg_scale == 1
    # beside the seed's 18: what its ComfyUI graph fixes in nodes without a param (docs/infinitetalk-notes.md)
    assert (p.resolution, p.sampling_shift, p.color_correction) == ("480p", 11.0, 1.0)
    assert len(InfiniteTalkParams.model_fields) == 21


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"resolution": "1080p"}, "infinite_talk.resolution: Input should be '480p' or '720p'"),
        ({"sampling_shift": 0}, "infinite_talk.sampling_shift: Input should be greater than 0"),
        ({"color_correction": 1.5}, "infinite_talk.color_correction: Input should be less than or equal to 1"),
    ],
)
def test_the_extra_infinite_talk_params_have_limits(raw, expected):
    with pytest.raises(ParamsError, match=expected):
        validate_params("infinite_talk", InfiniteTalkParams, raw)


def test_every_infinite_talk_extra_param_is_documented():
    for name in ("resolution", "sampling_shift", "color_correction"):
        assert len(InfiniteTalkParams.model_fields[name].description) > 40


def test_ai_upscaler_defaults_match_the_seed_table():
    p = AIUpscalerParams()
    assert p.model_name_0 == "RealESRGAN_x2.pth"
    assert p.model_name_1 == "codeformer.pth"
    assert p.batch_size == 50
    assert p.facedetection == "retinaface_resnet50"
    assert p.codeformer_fidelity == 1
    assert p.frame_load_cap == 0
    assert len(AIUpscalerParams.model_fields) == 6


@pytest.mark.parametrize("model", [TextToSpeechParams, InfiniteTalkParams, AIUpscalerParams])
def test_every_param_is_accepted_with_its_default(model):
    defaults = model().model_dump()
    assert validate_params("node", model, defaults).model_dump() == defaults


@pytest.mark.parametrize(
    "model, raw, expected",
    [
        (TextToSpeechParams, {"nfe_step": "many"}, "f5_to_tts.nfe_step: Input should be a valid integer"),
        (TextToSpeechParams, {"speed": "fast"}, "f5_to_tts.speed:"),
        (TextToSpeechParams, {"voice": "x"}, "f5_to_tts.voice: unknown param"),
        (InfiniteTalkParams, {"fps": 12.5}, "infinite_talk.fps:"),
        (InfiniteTalkParams, {"normalize_loudness": "maybe"}, "infinite_talk.normalize_loudness:"),
        (AIUpscalerParams, {"batch_size": 0}, "upscale_video.batch_size:"),
        (AIUpscalerParams, {"codeformer_fidelity": 2}, "upscale_video.codeformer_fidelity:"),
    ],
)
def test_unknown_or_ill_typed_params_are_refused_naming_node_and_field(model, raw, expected):
    node = {TextToSpeechParams: "f5_to_tts", InfiniteTalkParams: "infinite_talk", AIUpscalerParams: "upscale_video"}
    with pytest.raises(ParamsError) as err:
        validate_params(node[model], model, raw)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_strings_are_converted_by_the_params_model():
    p = validate_params("infinite_talk", InfiniteTalkParams, {"fps": "30", "normalize_loudness": "false"})
    assert p.fps == 30 and p.normalize_loudness is False


@pytest.mark.parametrize("setting", ["tts_backend", "talk_backend", "upscale_backend"])
def test_a_backend_that_does_not_exist_is_refused_with_the_settings(use_settings, setting):
    """`comfyui` passed the settings and failed the job at its node, after the nodes before it ran."""
    from spinbot.errors import SettingsError
    from spinbot.settings import get_settings

    use_settings(**{setting: "comfyui"})
    with pytest.raises(SettingsError) as err:
        get_settings()
    assert str(err.value) == f"SPINBOT_{setting.upper()}='comfyui' refused: Input should be 'lite' or 'native'"


# ---- model-file params stay inside their folder of SPINBOT_MODELS_DIR ---------------------------------------------

PARAMS_MODELS = {
    "f5_to_tts": TextToSpeechParams,
    "infinite_talk": InfiniteTalkParams,
    "upscale_video": AIUpscalerParams,
}
MODEL_FILE_PARAMS = [(task, param) for task, slots in MODEL_SLOTS.items() for param in slots]
OUTSIDE = [
    ("../../in/face_x2.png", "has a '..' part"),
    ("wanvideo/../../../etc/passwd", "has a '..' part"),
    ("..", "has a '..' part"),
    ("/etc/passwd_x2", "is absolute"),
    ("C:/models/x.pth", "is absolute"),
    ("sub\\x.pth", "has a backslash (use '/' between folders)"),
    ("x.pth\n", "has a control character"),
    ("./x.pth", "has an empty or '.' part"),
    ("sub//x.pth", "has an empty or '.' part"),
]


@pytest.mark.parametrize("task, param", MODEL_FILE_PARAMS)
@pytest.mark.parametrize("value, why", OUTSIDE, ids=[v for v, _ in OUTSIDE])
def test_a_model_file_param_that_could_name_a_file_outside_its_folder_is_refused(task, param, value, why):
    # '../../in/face_x2.png' was `present` in `spinbot models list`, accepted at submission, and a worker would have
    # torch.loaded it; a missing one was answered with its resolved server path.
    with pytest.raises(ParamsError) as err:
        validate_params(task, PARAMS_MODELS[task], {param: value})
    folder = MODEL_SLOTS[task][param].folder
    assert str(err.value) == (
        f"{task}.{param}: must be a relative path inside {folder}/ of SPINBOT_MODELS_DIR; this one {why} "
        f"(got {echo(value)})"
    )
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("task, param", MODEL_FILE_PARAMS)
def test_nested_model_file_names_and_the_defaults_stay_valid(task, param):
    model = PARAMS_MODELS[task]
    for value in (model.model_fields[param].default, "wanvideo/Wan2_1_VAE_bf16.safetensors", "a/b.c/x-y_1.pth"):
        assert getattr(validate_params(task, model, {param: value}), param) == value
    assert validate_params("infinite_talk", InfiniteTalkParams, {"lora_model": ""}).lora_model == ""  # no LoRA


def test_the_models_folder_check_names_nothing_outside_its_folder_even_unvalidated(tmp_path):
    # A caller that skipped params validation still learns nothing of the file system: the file exists here.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "face_x2.png").write_bytes(b"x")
    why = missing_model(tmp_path / "models", "upscale_video", "model_name_0", "../../in/face_x2.png")
    assert why == (
        "'../../in/face_x2.png' is not a relative path inside upscale_models/ of the models folder: it has a '..' part"
    )


# ---- every number has both bounds: no accepted value can overflow inside a node ----------------------------------


def numeric_params(model) -> list[tuple[str, dict]]:
    schema = model.model_json_schema()["properties"]
    return [(name, prop) for name, prop in schema.items() if prop.get("type") in ("integer", "number")]


@pytest.mark.parametrize("model", PARAMS_MODELS.values(), ids=PARAMS_MODELS)
def test_every_number_param_has_a_lower_and_an_upper_bound(model):
    for name, prop in numeric_params(model):
        assert {"minimum", "exclusiveMinimum"} & set(prop), name
        assert {"maximum", "exclusiveMaximum"} & set(prop), name


@pytest.mark.parametrize("task, model", PARAMS_MODELS.items())
def test_a_huge_number_is_refused_at_validation_naming_the_param(task, model):
    # infinite_talk.audio_scale=1e308 was accepted, then failed inside the node: OverflowError, a traceback logged
    for name, prop in numeric_params(model):
        huge = 1e308 if prop["type"] == "number" else 10**30
        with pytest.raises(ParamsError, match=rf"^{task}\.{name}: Input should be less than"):
            validate_params(task, model, {name: huge})


def test_the_bounds_come_from_the_seeds_tools():
    talk, tts = (
        InfiniteTalkParams.model_json_schema()["properties"],
        TextToSpeechParams.model_json_schema()["properties"],
    )
    assert [talk[n]["maximum"] for n in ("sampling_cfg", "audio_scale", "audio_cfg_scale")] == [30, 10, 100]
    assert (talk["frame_window_size"]["maximum"], talk["motion_frame"]["maximum"]) == (1000, 999)
    assert (tts["temperature"]["maximum"], tts["cfg_strength"]["maximum"], tts["seed"]["maximum"]) == (2, 10, 2**53 - 1)
    assert AIUpscalerParams.model_json_schema()["properties"]["frame_load_cap"]["maximum"] == 1_000_000


def test_the_lite_talking_head_renders_at_every_upper_bound(tmp_path):
    # audio_scale 100 (WanVideoWrapper's MultiTalkWav2VecEmbeds bound) crossed the lite animator's lip corners: a
    # mouth of negative width, "negative dimensions are not allowed"
    from spinbot.media.audio import load_audio, write_wav
    from spinbot.samples import portrait_path, voice_path
    from tests.support.tasks import run_talk

    audio, sr = load_audio(voice_path())
    speech = write_wav(tmp_path / "speech.wav", audio[: int(2 * sr)], sr)
    top = {name: prop["maximum"] for name, prop in numeric_params(InfiniteTalkParams)}
    out, _ = run_talk(tmp_path, portrait_path(tmp_path), speech, live_output=False, **top)
    assert out.artifacts["video"]


def test_spinbot_params_describes_the_new_bounds():
    from typer.testing import CliRunner

    from spinbot.cli import app

    result = CliRunner().invoke(app, ["params"])
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("  ") and line.split()}
    assert "number, >= 0, <= 10; default 1.6" in lines["audio_scale"]
    assert "integer, >= 0, <= 9007199254740991; default 290381" in lines["seed"]
    assert "integer, >= 0, <= 1000000; default 0" in lines["frame_load_cap"]


def test_the_script_text_is_bounded_by_its_setting_only():
    """A hard-coded 20,000 made SPINBOT_MAX_SCRIPT_CHARS above it useless; admission applies the setting."""
    from spinbot.control.script import ScriptParams

    assert len(validate_params("script", ScriptParams, {"text": "a" * 25_000}).text) == 25_000
