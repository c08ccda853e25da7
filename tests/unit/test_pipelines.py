import ast
import copy
import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinbot.cli import app
from spinbot.errors import PipelineError, echo
from spinbot.pipelines.spec import (
    RESERVED_NODE_IDS,
    default_pipelines_path,
    load_pipelines,
    load_pipelines_file,
    parse_pipelines,
)
from spinbot.tasks.catalog import TASK_IO, TaskIO, load_task

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


def seed_renaming(old: str, new: str) -> dict:
    """The seed pipeline with one node's id changed, in its node and in its edges."""

    def rename(p):
        for node in p["nodes"]:
            node["id"] = new if node["id"] == old else node["id"]
        for edge in p["edges"]:
            edge["from"], edge["to"] = (new if end == old else end for end in (edge["from"], edge["to"]))

    return seed_with(rename)


@pytest.mark.parametrize(
    "node_id", ["tts node", "ттс", "a/b", "../../../escape", "..", "-tts", ".tts", "tts\n", "x" * 65, "x" * 100_000]
)
def test_a_node_id_that_is_not_one_artifact_key_part_is_refused_at_load(node_id):
    # Such ids validated, then every job failed at the node's first artifact, or put the raw id into a temp folder
    # name (/tmp/spinbot-../../../escape-...: a server path in the job's error).
    with pytest.raises(PipelineError) as err:
        parse_pipelines(seed_renaming("f5_to_tts", node_id))
    message = str(err.value)
    assert message.startswith(f"pipeline 'f5tts_infinitetalk': node id {echo(node_id)} is not usable: ")
    assert "a node id is one artifact key part: letters, digits" in message and "at most 64 characters" in message
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize("node_id", ["tts", "TTS-2", "tts.v2", "a=b", "9", "x" * 64])
def test_node_ids_made_of_key_characters_load(node_id):
    spec = parse_pipelines(seed_renaming("f5_to_tts", node_id))["f5tts_infinitetalk"]
    assert spec.topological_order()[1] == node_id


@pytest.mark.parametrize("node_id", ["inputs", "outputs", "job_id"])
def test_ids_owned_by_the_job_inputs_and_the_planner_are_refused(node_id):
    with pytest.raises(PipelineError, match=f"node id '{node_id}' is reserved"):
        parse_pipelines(seed_renaming("f5_to_tts", node_id))


def test_the_reserved_ids_are_the_planners_state_keys_and_the_inputs_folder():
    from spinbot.control.runner import INPUTS_NODE
    from spinbot.pipelines.planner import JobState

    assert set(RESERVED_NODE_IDS) == set(JobState.__annotations__) | {INPUTS_NODE}


def pipeline(nodes: list[tuple[str, str]], edges: list[tuple[str, str]]) -> dict:
    planes = {"script.generateScript": "node"}
    return {
        "p": {
            "nodes": [{"id": i, "task": t, "plane": planes.get(t, "python")} for i, t in nodes],
            "edges": [{"from": a, "to": b} for a, b in edges],
        }
    }


SCRIPT, TTS, TALK, UP = (
    ("script", "script.generateScript"),
    ("tts", "f5_to_tts"),
    ("talk", "infinite_talk"),
    ("up", "upscale_video"),
)


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            pipeline([SCRIPT, TALK], [("script", "talk")]),
            "node 'talk': needs artifact 'audio', which no node before it makes (made by task f5_to_tts)",
        ),
        (
            pipeline([TTS, TALK], [("tts", "talk")]),
            "node 'tts': needs value 'text', which no node before it makes (made by task script.generateScript)",
        ),
        (
            pipeline([SCRIPT, TTS, UP], [("script", "tts"), ("tts", "up")]),
            "node 'up': needs artifact 'video', which no node before it makes "
            "(made by task infinite_talk or upscale_video)",
        ),
        (  # a producer that runs beside the node, not before it, hands it nothing
            pipeline([SCRIPT, TTS, TALK, UP], [("script", "tts"), ("script", "talk"), ("talk", "up"), ("tts", "up")]),
            "node 'talk': needs artifact 'audio'",
        ),
    ],
    ids=["talk-without-tts", "tts-without-script", "upscale-without-talk", "tts-beside-talk"],
)
def test_a_node_whose_inputs_nothing_before_it_makes_is_refused_at_load(data, expected):
    # These validated, then the job failed at the node: "needs input artifact 'audio', which no upstream node produced"
    with pytest.raises(PipelineError) as err:
        parse_pipelines(data)
    assert str(err.value).startswith(f"pipeline 'p', {expected}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "data, node",
    [
        (pipeline([SCRIPT], []), "script"),
        (pipeline([SCRIPT, TTS], [("script", "tts")]), "tts"),
        (  # every end is a result: a second end without a video would make the job's result depend on the order
            pipeline(
                [SCRIPT, TTS, TALK, ("tts2", "f5_to_tts")], [("script", "tts"), ("tts", "talk"), ("script", "tts2")]
            ),
            "tts2",
        ),
    ],
    ids=["script-only", "ends-at-tts", "a-second-end-without-video"],
)
def test_a_pipeline_that_does_not_end_in_a_video_is_refused_at_load(data, node):
    # A script-only pipeline validated, then its job "succeeded but produced no artifact" (exit 1).
    with pytest.raises(PipelineError) as err:
        parse_pipelines(data)
    assert str(err.value) == (
        f"pipeline 'p', node '{node}': ends the pipeline but makes no 'video', the job's result "
        "(made by task infinite_talk or upscale_video)"
    )


@pytest.mark.parametrize(
    "data",
    [
        pipeline([SCRIPT, TTS, TALK], [("script", "tts"), ("tts", "talk")]),
        pipeline(
            [SCRIPT, TTS, TALK, UP, ("up2", "upscale_video")],
            [("script", "tts"), ("tts", "talk"), ("talk", "up"), ("talk", "up2")],
        ),
        pipeline(
            [SCRIPT, TTS, TALK, UP, ("up2", "upscale_video")],
            [("script", "tts"), ("tts", "talk"), ("talk", "up"), ("up", "up2")],
        ),
    ],
    ids=["ends-at-talk", "two-upscales", "upscaled-twice"],
)
def test_pipelines_whose_every_node_gets_its_inputs_and_that_end_in_videos_load(data):
    assert list(parse_pipelines(data)) == ["p"]


def _asked_and_returned(path: str) -> TaskIO:
    """What a task's code asks its TaskContext for (input_path / value with a literal name) and the names it puts in
    NodeOutput(artifacts=..., values=...)."""
    found: dict[str, set[str]] = {"input_path": set(), "value": set(), "artifacts": set(), "values": set()}
    for call in ast.walk(ast.parse(Path(path).read_text())):
        if not isinstance(call, ast.Call):
            continue
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        if name in ("input_path", "value") and call.args and isinstance(call.args[0], ast.Constant):
            found[name].add(call.args[0].value)
        if name == "NodeOutput":
            for kw in call.keywords:
                if kw.arg in ("artifacts", "values") and isinstance(kw.value, ast.Dict):
                    found[kw.arg] |= {k.value for k in kw.value.keys if isinstance(k, ast.Constant)}
    return TaskIO(*(tuple(sorted(found[k])) for k in ("input_path", "value", "artifacts", "values")))


@pytest.mark.parametrize("task", sorted(TASK_IO))
def test_each_tasks_declared_inputs_and_outputs_are_what_its_code_asks_for_and_returns(task):
    declared = TASK_IO[task]
    code = _asked_and_returned(inspect.getsourcefile(load_task(task).run))
    assert code == TaskIO(*(tuple(sorted(getattr(declared, f))) for f in declared.__dataclass_fields__))


def test_cli_validate_refuses_a_pipeline_that_cannot_run_in_one_line(tmp_path: Path):
    path = tmp_path / "trav.json"
    path.write_text(json.dumps(seed_renaming("f5_to_tts", "../../../escape")))
    result = CliRunner().invoke(app, ["pipelines", "validate", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: pipeline 'f5tts_infinitetalk': node id '../../../escape' is not usable")
    assert result.output.count("\n") == 1
