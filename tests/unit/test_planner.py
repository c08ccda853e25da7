import threading

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from spinbot.pipelines.planner import build_graph, compile_graph
from spinbot.pipelines.spec import load_pipelines, parse_pipelines

FAN_IN = {
    "fan_in": {
        "nodes": [
            {"id": "script", "task": "script.generateScript", "plane": "node"},
            {"id": "voice_a", "task": "f5_to_tts", "plane": "python"},
            {"id": "voice_b", "task": "f5_to_tts", "plane": "python"},
            {"id": "talk", "task": "infinite_talk", "plane": "python"},
            {"id": "upscale", "task": "upscale_video", "plane": "python"},
        ],
        "edges": [
            {"from": "script", "to": "voice_a"},
            {"from": "script", "to": "voice_b"},
            {"from": "voice_a", "to": "talk"},
            {"from": "voice_b", "to": "talk"},
            {"from": "talk", "to": "upscale"},
            {"from": "script", "to": "upscale"},
        ],
    }
}


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def __call__(self, job_id, node_id, upstream):
        with self.lock:
            self.calls.append((node_id, sorted(upstream)))
        return {"values": {f"from_{node_id}": f"{job_id}:{node_id}"}}


def test_seed_pipeline_becomes_a_chain_graph():
    spec = load_pipelines()["f5tts_infinitetalk"]
    graph = build_graph(spec, Recorder()).compile().get_graph()
    edges = {(e.source, e.target) for e in graph.edges}
    assert edges == {
        ("__start__", "script"),
        ("script", "f5_to_tts"),
        ("f5_to_tts", "infinite_talk"),
        ("infinite_talk", "upscale_video"),
        ("upscale_video", "__end__"),
    }


def test_seed_pipeline_runs_in_order_with_upstream_outputs():
    spec = load_pipelines()["f5tts_infinitetalk"]
    rec = Recorder()
    app = compile_graph(spec, rec, InMemorySaver())
    final = app.invoke({"job_id": "j1", "outputs": {}}, {"configurable": {"thread_id": "j1"}})
    assert [c[0] for c in rec.calls] == ["script", "f5_to_tts", "infinite_talk", "upscale_video"]
    assert rec.calls[-1][1] == ["f5_to_tts", "infinite_talk", "script"]
    assert final["outputs"]["upscale_video"]["values"]["from_upscale_video"] == "j1:upscale_video"


def test_fan_in_waits_for_every_upstream_node_and_runs_once():
    spec = parse_pipelines(FAN_IN)["fan_in"]
    rec = Recorder()
    app = compile_graph(spec, rec, InMemorySaver())
    final = app.invoke({"job_id": "j2", "outputs": {}}, {"configurable": {"thread_id": "j2"}})
    order = [c[0] for c in rec.calls]
    assert sorted(order) == ["script", "talk", "upscale", "voice_a", "voice_b"]  # each node exactly once
    assert order.index("talk") > max(order.index("voice_a"), order.index("voice_b"))
    assert order.index("upscale") > order.index("talk")
    assert dict(rec.calls)["talk"] == ["script", "voice_a", "voice_b"]
    assert set(final["outputs"]) == {"script", "voice_a", "voice_b", "talk", "upscale"}


def test_resume_from_checkpoint_skips_finished_nodes():
    spec = load_pipelines()["f5tts_infinitetalk"]
    saver = InMemorySaver()
    first = Recorder()

    def failing(job_id, node_id, upstream):
        if node_id == "infinite_talk":
            raise RuntimeError("worker died")
        return first(job_id, node_id, upstream)

    config = {"configurable": {"thread_id": "j3"}}
    with pytest.raises(RuntimeError, match="worker died"):
        compile_graph(spec, failing, saver).invoke({"job_id": "j3", "outputs": {}}, config)
    second = Recorder()
    app = compile_graph(spec, second, saver)
    assert app.get_state(config).next == ("infinite_talk",)
    app.invoke(None, config)
    assert [c[0] for c in first.calls] == ["script", "f5_to_tts"]
    assert [c[0] for c in second.calls] == ["infinite_talk", "upscale_video"]
