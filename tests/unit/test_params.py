import pytest

from spinbot.errors import ParamsError
from spinbot.tasks.base import validate_params
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
