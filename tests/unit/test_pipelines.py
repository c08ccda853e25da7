import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinbot.cli import app
from spinbot.errors import PipelineError
from spinbot.pipelines.spec import default_pipelines_path, load_pipelines, load_pipelines_file, parse_pipelines

SEED = {
    "f5tts_infinitetalk": {
        "nodes": [
            {"id": "script", "task": "script.generateScript", "plane": "node"},
            {"id": "f5_to_tts", "task": "f5_to_tts", "plane": "python"},
            {"id": "infinite_talk", "task": "infinite_talk", "plane": "python"},
            {"id": "upscale_video", "task": "upscale_video", "plane": "python"},
        ],
        "edges": [
            {"from": "script", "to": "f5_to_tts"},
            {"from": "f5_to_tts", "to": "infinite_talk"},
            {"from": "infinite_talk", "to": "upscale_video"},
        ],
    }
}


def seed_with(mutate) -> dict:
    data = copy.deepcopy(SEED)
    mutate(data["f5tts_infinitetalk"])
    return data


def test_shipped_file_is_the_seed_pipeline_exactly():
    assert json.loads(default_pipelines_path().read_text()) == SEED
    spec = load_pipelines()["f5tts_infinitetalk"]
    assert spec.topological_order() == ["script", "f5_to_tts", "infinite_talk", "upscale_video"]
    assert [n.plane for n in spec.nodes] == ["node", "python", "python", "python"]


def test_myspinbot_file_with_extra_keys_loads_unchanged(tmp_path: Path):
    data = seed_with(lambda p: p["nodes"][0].update({"label": "Script", "retries": 2}))
    data["f5tts_infinitetalk"]["description"] = "as MySpinBot writes it"
    path = tmp_path / "pipelines.json"
    path.write_text(json.dumps({"pipelines": data}))
    spec = load_pipelines_file(path)["f5tts_infinitetalk"]
    assert spec.nodes[0].model_extra == {"label": "Script", "retries": 2}


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda p: p["edges"].append({"from": "upscale_video", "to": "f5_to_tts"}),
            "node 'f5_to_tts': is part of a cycle",
        ),
        (lambda p: p["edges"].append({"from": "infinite_talk", "to": "nowhere"}), "names unknown node 'nowhere'"),
        (
            lambda p: p["nodes"].append({"id": "f5_to_tts", "task": "f5_to_tts", "plane": "python"}),
            "node 'f5_to_tts': duplicate node id",
        ),
        (lambda p: p["nodes"][1].update(task="f5_to_tts_v9"), "node 'f5_to_tts': unknown task 'f5_to_tts_v9'"),
        (lambda p: p["nodes"][1].update(plane="rust"), "node 'f5_to_tts': unknown plane 'rust'"),
        (
            lambda p: p["nodes"].append({"id": "orphan", "task": "upscale_video", "plane": "python"}),
            "node 'orphan': unreachable from the start node 'script'",
        ),
        (lambda p: p["nodes"][1].update(plane="node"), "node 'f5_to_tts': task 'f5_to_tts' runs on plane 'python'"),
        (lambda p: p["edges"].append({"from": "script", "to": "script"}), "node 'script'"),
        (lambda p: p["nodes"][2].pop("task"), "node 'infinite_talk': task: Field required"),
    ],
    ids=[
        "cycle",
        "unknown-edge-node",
        "duplicate-id",
        "unknown-task",
        "unknown-plane",
        "unreachable",
        "wrong-plane",
        "self-loop",
        "missing-task",
    ],
)
def test_loader_refuses_with_one_line_naming_pipeline_and_node(mutate, expected):
    with pytest.raises(PipelineError) as err:
        parse_pipelines(seed_with(mutate))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("pipeline 'f5tts_infinitetalk'")
    assert expected in message


def test_unreachable_island_with_its_own_edges_is_refused():
    def island(p):
        p["nodes"] += [
            {"id": "a", "task": "f5_to_tts", "plane": "python"},
            {"id": "b", "task": "upscale_video", "plane": "python"},
        ]
        p["edges"].append({"from": "a", "to": "b"})

    with pytest.raises(PipelineError, match="node 'a': unreachable"):
        parse_pipelines(seed_with(island))


def test_bad_json_and_empty_files_are_one_line_errors(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PipelineError, match="not valid JSON"):
        load_pipelines_file(bad)
    with pytest.raises(PipelineError, match="cannot read"):
        load_pipelines_file(tmp_path / "missing.json")
    with pytest.raises(PipelineError, match="has no nodes"):
        parse_pipelines({"empty": {"nodes": [], "edges": []}})


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON (nested too deeply)"),  # was a RecursionError traceback
        (b"\xff\xfe{}", "not UTF-8 text (byte 0)"),  # was a UnicodeDecodeError traceback
        (b" " * (2 << 20), "a pipelines file is at most 1,048,576 bytes"),
    ],
)
def test_a_hostile_pipelines_file_is_one_line_before_it_is_parsed(tmp_path: Path, content: bytes, expected: str):
    path = tmp_path / "pipelines.json"
    path.write_bytes(content)
    with pytest.raises(PipelineError) as err:
        load_pipelines_file(path)
    assert str(err.value) == f"{path}: {expected}"
    result = CliRunner().invoke(app, ["pipelines", "validate", str(path)])
    assert result.exit_code == 2 and result.output.strip() == f"error: {path}: {expected}"


def test_spinbot_pipelines_env_points_at_users_file(tmp_path, use_settings, spinbot_env):
    data = {"mine": copy.deepcopy(SEED["f5tts_infinitetalk"])}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    use_settings(pipelines=path)
    assert list(load_pipelines()) == ["mine"]


def test_cli_pipelines_commands(tmp_path: Path):
    runner = CliRunner()
    listed = runner.invoke(app, ["pipelines", "list"])
    assert listed.exit_code == 0 and "f5tts_infinitetalk" in listed.output
    shown = runner.invoke(app, ["pipelines", "show", "f5tts_infinitetalk"])
    assert shown.exit_code == 0 and json.loads(shown.output) == SEED["f5tts_infinitetalk"]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SEED))
    assert runner.invoke(app, ["pipelines", "validate", str(good)]).exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(seed_with(lambda p: p["nodes"][3].update(plane="gpu"))))
    result = runner.invoke(app, ["pipelines", "validate", str(bad)])
    assert result.exit_code != 0
    assert "unknown plane 'gpu'" in result.output
    assert runner.invoke(app, ["pipelines", "show", "nope"]).exit_code != 0
