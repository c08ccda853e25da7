"""The page's own API data (spinbot/api/form.py), the status filter of the job list, and settings that cannot work
refused when the job is submitted."""

import time

import pytest

from spinbot.api.app import create_app
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import reset_settings
from spinbot.tasks.catalog import TASK_PLANES
from tests.support.api_client import local_client
from tests.unit.test_api import KEY_A, KEY_B, auth, stored, upload


@pytest.fixture
def client(spinbot_env, monkeypatch):
    monkeypatch.setenv("SPINBOT_API_KEYS", f"{KEY_A},{KEY_B}")
    monkeypatch.setenv("SPINBOT_API_JOB_THREADS", "1")
    reset_settings()
    with local_client(create_app()) as c:
        yield c


@pytest.fixture
def native_upscaler(spinbot_env, monkeypatch, tmp_path):
    """SPINBOT_UPSCALE_BACKEND=native with a models folder that holds two upscaler files and CodeFormer."""
    models = tmp_path / "models"
    for name in (
        "upscale_models/RealESRGAN_x2.pth",
        "upscale_models/4x-UltraSharp.pth",
        "facerestore_models/codeformer.pth",
    ):
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_bytes(b"not a real checkpoint")
    monkeypatch.setenv("SPINBOT_UPSCALE_BACKEND", "native")
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(models))
    monkeypatch.setenv("SPINBOT_API_KEYS", f"{KEY_A},{KEY_B}")
    reset_settings()
    with local_client(create_app()) as c:
        yield c


def wait_for_end(client, job_id: str, key: str = KEY_A) -> dict:
    deadline = time.time() + 120
    while time.time() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end: {job}")


def test_every_param_of_every_task_has_a_description(client):
    schemas = client.get("/v1/params", headers=auth(KEY_A)).json()
    for task in TASK_PLANES:
        for name, prop in schemas[task]["properties"].items():
            assert prop.get("description"), (task, name)
    assert schemas["infinite_talk"]["properties"]["sampling_scheduler"]["enum"] == ["euler", "unipc", "dpm++_sde"]


def test_the_form_data_names_each_task_its_backend_and_no_files_for_lite(client):
    form = client.get("/v1/params/form", headers=auth(KEY_A)).json()
    assert set(form) == set(TASK_PLANES) | {"limits"}
    assert form["infinite_talk"]["description"].startswith("Portrait + speech -> lip-synced talking-head video")
    assert "backend" not in form["script.generateScript"]  # runs in the control plane, no backend to pick
    assert form["upscale_video"]["backend"] == "lite" and form["upscale_video"]["setting"] == "SPINBOT_UPSCALE_BACKEND"
    assert form["upscale_video"]["files"]["model_name_0"] == {
        "choices": [],
        "note": "the lite backend loads no model file",
    }


def test_the_form_data_gives_the_page_the_servers_input_limits_and_the_uploads_413_message(spinbot_env, monkeypatch):
    """The page could not refuse an oversized file before sending it: it was not told the limit."""
    monkeypatch.setenv("SPINBOT_API_KEYS", KEY_A)
    monkeypatch.setenv("SPINBOT_MAX_UPLOAD_BYTES", "2048")
    monkeypatch.setenv("SPINBOT_MAX_PROMPT_CHARS", "300")
    reset_settings()
    with local_client(create_app()) as client:
        limits = client.get("/v1/params/form", headers=auth(KEY_A)).json()["limits"]
        refused = client.post(
            "/v1/uploads", data={"kind": "voice"}, files={"file": ("v.wav", b"x" * 4096)}, headers=auth(KEY_A)
        )
    assert limits == {
        "upload_bytes": 2048,
        "upload_too_large": refused.json()["error"],
        "prompt_chars": 300,
        "script_chars": 10_000,
        "ref_text_chars": 1000,
    }
    assert refused.status_code == 413
    assert limits["upload_too_large"].startswith("upload is larger than the limit of 0.00195 MiB (2048 bytes, ")


def test_the_form_data_lists_the_model_files_a_native_backend_finds(native_upscaler):
    files = native_upscaler.get("/v1/params/form", headers=auth(KEY_A)).json()["upscale_video"]["files"]
    assert files["model_name_0"]["choices"] == ["4x-UltraSharp.pth", "RealESRGAN_x2.pth"]
    assert files["model_name_1"]["choices"] == ["codeformer.pth"]


def test_a_native_upscaler_file_missing_from_the_models_folder_is_refused_at_submission(
    native_upscaler, spinbot_env, tmp_path
):
    image = upload(native_upscaler, "portrait", portrait_path(tmp_path)).json()["id"]
    voice = upload(native_upscaler, "voice", voice_path()).json()["id"]
    before = stored(spinbot_env)
    body = {
        "prompt": "hi",
        "image": image,
        "voice": voice,
        "params": {"upscale_video": {"model_name_0": "RealESRGAN_x4plus.pth"}},
    }
    r = native_upscaler.post("/v1/jobs", json=body, headers=auth(KEY_A))
    assert r.status_code == 400
    assert r.json()["error"].startswith(
        "upscale_video.model_name_0: 'RealESRGAN_x4plus.pth' is not in the models folder: looked for "
    )
    assert stored(spinbot_env) == before  # nothing of the job written
    body["params"] = {"upscale_video": {"model_name_1": "GFPGANv1.4.pth"}}
    r = native_upscaler.post("/v1/jobs", json=body, headers=auth(KEY_A))
    assert r.status_code == 400 and r.json()["error"].startswith("upscale_video.model_name_1: 'GFPGANv1.4.pth'")
    assert r.json()["error"].endswith("; the native upscaler needs it (put the file there)")  # no known source


def test_a_missing_seed_default_upscaler_file_names_the_command_that_fetches_it(native_upscaler, tmp_path):
    (tmp_path / "models" / "facerestore_models" / "codeformer.pth").unlink()
    image = upload(native_upscaler, "portrait", portrait_path(tmp_path)).json()["id"]
    voice = upload(native_upscaler, "voice", voice_path()).json()["id"]
    r = native_upscaler.post("/v1/jobs", json={"prompt": "hi", "image": image, "voice": voice}, headers=auth(KEY_A))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error.startswith("upscale_video.model_name_1: 'codeformer.pth' is not in the models folder: looked for ")
    assert error.endswith("; the native upscaler needs it (`spinbot models pull` fetches it)")


def test_a_model_file_outside_the_models_folder_is_refused_without_probing_it(native_upscaler, spinbot_env, tmp_path):
    # '../' reached any server file: one that exists was accepted (and a worker would torch.load it), one that does
    # not was answered with its resolved path, so a key holder could map the server's files
    image = upload(native_upscaler, "portrait", portrait_path(tmp_path)).json()["id"]
    voice = upload(native_upscaler, "voice", voice_path()).json()["id"]
    before = stored(spinbot_env)
    for value, why in (("../../../../etc/hostname", "has a '..' part"), ("/etc/hostname", "is absolute")):
        params = {"upscale_video": {"model_name_0": value}}
        body = {"prompt": "hi", "image": image, "voice": voice, "params": params}
        r = native_upscaler.post("/v1/jobs", json=body, headers=auth(KEY_A))
        assert r.status_code == 400
        assert r.json()["error"].startswith(  # the API takes server paths out of what it echoes
            "upscale_video.model_name_0: must be a relative path inside upscale_models/ of SPINBOT_MODELS_DIR; "
            f"this one {why} (got '"
        )
    assert stored(spinbot_env) == before


def test_v1_params_describes_both_bounds_of_every_number(client):
    schemas = client.get("/v1/params", headers=auth(KEY_A)).json()
    for task in ("f5_to_tts", "infinite_talk", "upscale_video"):
        for name, prop in schemas[task]["properties"].items():
            if prop.get("type") in ("integer", "number"):
                assert {"minimum", "exclusiveMinimum"} & set(prop) and {"maximum", "exclusiveMaximum"} & set(prop), name
    assert schemas["infinite_talk"]["properties"]["audio_scale"]["maximum"] == 10


def test_lite_settings_that_cannot_work_are_refused_at_submission(client, tmp_path):
    image = upload(client, "portrait", portrait_path(tmp_path)).json()["id"]
    voice = upload(client, "voice", voice_path()).json()["id"]
    cases = [
        (
            {"upscale_video": {"model_name_0": "RealESRGAN.pth"}},
            "upscale_video.model_name_0: 'RealESRGAN.pth' names no upscale factor",
        ),
        (
            {"infinite_talk": {"sampling_scheduler": "ddim"}},
            "infinite_talk.sampling_scheduler: Input should be 'euler', 'unipc' or 'dpm++_sde'",
        ),
        ({"infinite_talk": {"fpss": 30}}, "infinite_talk.fpss: unknown param; did you mean fps?"),
    ]
    for params, message in cases:
        r = client.post(
            "/v1/jobs", json={"prompt": "hi", "image": image, "voice": voice, "params": params}, headers=auth(KEY_A)
        )
        assert r.status_code == 400 and r.json()["error"].startswith(message), r.text


def test_an_own_script_needs_no_prompt_and_the_inputs_come_back(client, tmp_path):
    portrait = portrait_path(tmp_path)
    image = upload(client, "portrait", portrait).json()["id"]
    voice = upload(client, "voice", voice_path()).json()["id"]
    r = client.post("/v1/jobs", json={"image": image, "voice": voice}, headers=auth(KEY_A))
    assert r.status_code == 400 and r.json()["error"].startswith("prompt is empty")
    r = client.post(
        "/v1/jobs",
        json={"image": image, "voice": voice, "params": {"script": {"text": "Hi there."}}},
        headers=auth(KEY_A),
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    got = client.get(f"/v1/jobs/{job_id}/inputs/source_image", headers=auth(KEY_A))
    assert got.status_code == 200 and got.content == portrait.read_bytes()
    got = client.get(f"/v1/jobs/{job_id}/inputs/narrator_voice", headers=auth(KEY_A))
    assert got.status_code == 200 and got.content == voice_path().read_bytes()
    assert client.get(f"/v1/jobs/{job_id}/inputs/source_image", headers=auth(KEY_B)).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/inputs/speech", headers=auth(KEY_A)).status_code == 422
    job = wait_for_end(client, job_id)
    assert job["status"] == "succeeded" and job["prompt"] == "" and job["script"] == "Hi there."


def test_the_job_list_filters_by_status(client, tmp_path, monkeypatch):
    image = upload(client, "portrait", portrait_path(tmp_path)).json()["id"]
    voice = upload(client, "voice", voice_path()).json()["id"]
    body = {"image": image, "voice": voice, "params": {"script": {"text": "Hi."}}}
    done = client.post("/v1/jobs", json=body, headers=auth(KEY_A)).json()["id"]
    # One job thread (the fixture's app): the second job waits behind the first, and is cancelled before it starts.
    stopped = client.post("/v1/jobs", json=body, headers=auth(KEY_A)).json()["id"]
    client.post(f"/v1/jobs/{stopped}/cancel", headers=auth(KEY_A))
    assert wait_for_end(client, done)["status"] == "succeeded"
    assert wait_for_end(client, stopped)["status"] == "cancelled"
    for status, ids in (("succeeded", [done]), ("cancelled", [stopped]), ("failed", [])):
        page = client.get(f"/v1/jobs?status={status}", headers=auth(KEY_A)).json()
        assert [j["id"] for j in page["items"]] == ids and page["total"] == len(ids)
    assert client.get("/v1/jobs?status=finished", headers=auth(KEY_A)).status_code == 422
