"""The native backends' imports (torch and each backend's packages: seconds) are done once as the API starts, in a
thread, with /readyz saying `loading` until they are; a submission no longer waits for them. With lite backends only,
or with Redis (workers run the tasks and check their own files), nothing is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from spinbot.control.admission import Admission
from spinbot.settings import get_settings
from spinbot.storage.local import LocalStore

# Run in a fresh interpreter: the app starts (its lifespan), nothing is submitted, and /readyz is asked until it is
# ready; what was imported by then is printed.
STARTUP = """
import json, sys, time
from fastapi.testclient import TestClient
from spinbot.api.app import create_app

before = "torch" in sys.modules
with TestClient(create_app(), base_url="http://localhost") as client:  # keyless: loopback Host only
    deadline, answers = time.monotonic() + 120, []
    while True:
        r = client.get("/readyz")
        answers.append(r.json()["dependencies"]["backends"]["detail"])
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    modules = sorted(m for m in sys.modules if m == "torch" or m.startswith("spinbot.models.layouts."))
    print(json.dumps({"torch_before": before, "status": r.status_code, "answers": answers, "modules": modules}))
"""


def start_app(tmp_path: Path, **settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINBOT_")}
    env |= {"SPINBOT_DATA_DIR": str(tmp_path / "data"), "SPINBOT_OLLAMA_HOST": "http://127.0.0.1:9"}
    env |= {f"SPINBOT_{k.upper()}": v for k, v in settings.items()}
    done = subprocess.run([sys.executable, "-c", STARTUP], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_native_backend_is_imported_as_the_api_starts_and_readyz_waits_for_it(tmp_path):
    (tmp_path / "models").mkdir()
    seen = start_app(tmp_path, upscale_backend="native", models_dir=str(tmp_path / "models"))
    assert not seen["torch_before"]
    assert seen["status"] == 200 and seen["answers"][-1] == "ok"
    assert set(seen["answers"]) <= {"loading", "ok"}  # 503 `loading` while the thread imports, never `not configured`
    assert seen["modules"] == ["spinbot.models.layouts.upscale", "torch"]  # no POST made: the startup imported them


def test_lite_backends_import_no_torch(tmp_path):
    seen = start_app(tmp_path)
    assert seen == {"torch_before": False, "status": 200, "answers": ["not configured"], "modules": []}


def test_with_redis_the_api_imports_nothing_native(spinbot_env, use_settings, tmp_path):
    use_settings(talk_backend="native", upscale_backend="native")
    assert Admission(get_settings(), LocalStore(tmp_path)).native_tasks_here() == ["infinite_talk", "upscale_video"]
    use_settings(redis_url="redis://127.0.0.1:9/0")
    assert Admission(get_settings(), LocalStore(tmp_path)).native_tasks_here() == []
