"""Load and validate pipelines.json (the MySpinBot format: name -> {nodes, edges})."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spinbot.errors import PipelineError, StorageKeyError, echo, shorten
from spinbot.storage.base import check_key
from spinbot.tasks.catalog import FINAL_ARTIFACT, JOB_INPUTS, TASK_IO, TASK_PLANES, TaskIO

PLANES = ("node", "python")
# A node id names the node's folder in artifact keys (jobs/<job>/<node>/<name>) and is part of its work folder's
# name: one key part, short enough for any file system's name limit once prefixed.
MAX_NODE_ID_CHARS = 64
NODE_ID_RULE = (
    f"a node id is one artifact key part: letters, digits, '.', '_', '=' or '-', starting with a letter or digit, "
    f"at most {MAX_NODE_ID_CHARS} characters"
)
# Ids that something else already owns: the planner's graph state keys (planner.JobState) and the folder that the
# job's uploaded inputs are stored under (tasks.user_files.INPUTS_NODE).
RESERVED_NODE_IDS = ("job_id", "outputs", "inputs")


class NodeSpec(BaseModel):
    # MySpinBot files may carry extra keys (labels, UI hints); they are kept, not refused.
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1)
    task: str = Field(min_length=1)
    plane: str


class EdgeSpec(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to")


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    nodes: tuple[NodeSpec, ...]
    edges: tuple[EdgeSpec, ...] = ()

    @property
    def start(self) -> str:
        """The first node listed is the pipeline's start."""
        return self.nodes[0].id

    def node(self, node_id: str) -> NodeSpec:
        return self.nodes_by_id[node_id]

    @cached_property
    def nodes_by_id(self) -> dict[str, NodeSpec]:
        return {n.id: n for n in self.nodes}

    def upstream(self, node_id: str) -> list[str]:
        return [e.source for e in self.edges if e.target == node_id]

    def downstream(self, node_id: str) -> list[str]:
        return [e.target for e in self.edges if e.source == node_id]

    def topological_order(self) -> list[str]:
        """Kahn's order, ties broken by the order nodes are listed (a validated pipeline is acyclic)."""
        indegree = {n.id: 0 for n in self.nodes}
        for e in self.edges:
            indegree[e.target] += 1
        ready = [n.id for n in self.nodes if indegree[n.id] == 0]
        order: list[str] = []
        while ready:
            current = ready.pop(0)
            order.append(current)
            for nxt in self.downstream(current):
                indegree[nxt] -= 1
                if indegree[nxt] == 0:
                    ready.append(nxt)
        return order

    def ancestors(self, node_id: str) -> list[str]:
        """All nodes upstream of node_id, in topological order."""
        seen: set[str] = set()
        todo = deque(self.upstream(node_id))
        while todo:
            cur = todo.popleft()
            if cur not in seen:
                seen.add(cur)
                todo.extend(self.upstream(cur))
        return [n for n in self.topological_order() if n in seen]


def _fail(pipeline: str, msg: str, node: str | None = None) -> PipelineError:
    where = f"pipeline '{pipeline}'" + (f", node '{node}'" if node else "")
    return PipelineError(f"{where}: {msg}")


def validate_pipeline(name: str, raw: Any) -> PipelineSpec:
    """Build a PipelineSpec and refuse anything the planner could not run: the first rule broken is the error."""
    spec = _parse(name, raw)
    for index, node in enumerate(spec.nodes):
        for node_rule in NODE_RULES:
            node_rule(spec, index, node)
    for edge in spec.edges:
        for edge_rule in EDGE_RULES:
            edge_rule(spec, edge)
    for graph_rule in GRAPH_RULES:
        graph_rule(spec)
    return spec


def _parse(name: str, raw: Any) -> PipelineSpec:
    """The file's shape: an object with nodes, each node with an id, a task and a plane."""
    if not isinstance(raw, dict):
        raise _fail(name, "must be an object with 'nodes' and 'edges'")
    if not raw.get("nodes"):
        raise _fail(name, "has no nodes")
    for i, node in enumerate(raw["nodes"]):
        label = node.get("id") if isinstance(node, dict) else None
        try:
            NodeSpec.model_validate(node)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "node"
            raise _fail(name, f"{field}: {first['msg']}", label or f"#{i}") from None
    try:
        return PipelineSpec.model_validate({**raw, "name": name})
    except ValidationError as err:
        first = err.errors()[0]
        raise _fail(name, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


# ---- rules for each node, in the order they are listed ------------------------------------------------------------


def node_id_is_a_key_part(spec: PipelineSpec, index: int, node: NodeSpec) -> None:
    # Checked first and quoted with echo: later messages put the id in quotes as it is.
    if not _is_key_part(node.id) or len(node.id) > MAX_NODE_ID_CHARS:
        raise _fail(spec.name, f"node id {echo(node.id)} is not usable: {NODE_ID_RULE}")
    if node.id in RESERVED_NODE_IDS:
        raise _fail(spec.name, f"node id '{node.id}' is reserved (reserved: {', '.join(RESERVED_NODE_IDS)})")


def _is_key_part(text: str) -> bool:
    """The artifact store's own rule for one part of a key (spinbot.storage.base.check_key)."""
    try:
        check_key(text)
    except StorageKeyError:
        return False
    # check_key's pattern ends in `$`, which also matches before a final newline: "tts\n" passes it
    return "/" not in text and text.isprintable()


def node_id_is_unique(spec: PipelineSpec, index: int, node: NodeSpec) -> None:
    if any(earlier.id == node.id for earlier in spec.nodes[:index]):
        raise _fail(spec.name, "duplicate node id", node.id)


def plane_is_known(spec: PipelineSpec, index: int, node: NodeSpec) -> None:
    if node.plane not in PLANES:
        raise _fail(spec.name, f"unknown plane '{node.plane}' (expected one of: {', '.join(PLANES)})", node.id)


def task_is_known(spec: PipelineSpec, index: int, node: NodeSpec) -> None:
    if node.task not in TASK_PLANES:
        raise _fail(spec.name, f"unknown task '{node.task}' (known: {', '.join(sorted(TASK_PLANES))})", node.id)


def task_runs_on_its_plane(spec: PipelineSpec, index: int, node: NodeSpec) -> None:
    plane = TASK_PLANES[node.task]
    if plane != node.plane:
        raise _fail(spec.name, f"task '{node.task}' runs on plane '{plane}', not '{node.plane}'", node.id)


# ---- rules for each edge ------------------------------------------------------------------------------------------


def edge_ends_are_nodes(spec: PipelineSpec, edge: EdgeSpec) -> None:
    for end in (edge.source, edge.target):
        if end not in spec.nodes_by_id:
            edge_text = f"{shorten(edge.source)} -> {shorten(edge.target)}"
            raise _fail(spec.name, f"edge {edge_text} names unknown node {echo(end)}")


def edge_is_not_a_loop(spec: PipelineSpec, edge: EdgeSpec) -> None:
    if edge.source == edge.target:
        raise _fail(spec.name, "edge from a node to itself (cycle)", edge.source)


# ---- rules for the whole graph ------------------------------------------------------------------------------------


def graph_is_acyclic(spec: PipelineSpec) -> None:
    order = spec.topological_order()
    if len(order) != len(spec.nodes):
        stuck = next(n.id for n in spec.nodes if n.id not in order)
        raise _fail(spec.name, "is part of a cycle", stuck)


def start_has_no_inputs(spec: PipelineSpec) -> None:
    if spec.upstream(spec.start):
        raise _fail(spec.name, "the start node (listed first) must have no incoming edge", spec.start)


def every_node_is_reachable(spec: PipelineSpec) -> None:
    reached = {spec.start}
    todo = deque([spec.start])
    while todo:
        for nxt in spec.downstream(todo.popleft()):
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    for node in spec.nodes:
        if node.id not in reached:
            raise _fail(spec.name, f"unreachable from the start node '{spec.start}'", node.id)


def inputs_are_made_upstream(spec: PipelineSpec) -> None:
    """Each node's needs are the job's inputs or made by one of its ancestors (what TaskContext hands it). One pass in
    topological order, each node's offer built from its parents', so a file of thousands of nodes stays quick."""
    if not _io_known(spec):
        return
    parents: dict[str, list[str]] = {n.id: [] for n in spec.nodes}
    for edge in spec.edges:
        parents[edge.target].append(edge.source)
    offered: dict[str, set[tuple[str, str]]] = {}  # node -> (kind, name) made before it
    for node_id in spec.topological_order():
        have = _offers(JOB_INPUTS)
        for parent in parents[node_id]:
            have |= offered[parent] | _offers(TASK_IO[spec.node(parent).task])
        offered[node_id] = have
        io = TASK_IO[spec.node(node_id).task]
        needs = [("artifact", n) for n in io.needs_artifacts] + [("value", n) for n in io.needs_values]
        for kind, name in needs:
            if (kind, name) not in have:
                why = f"needs {kind} '{name}', which no node before it makes ({_makers(kind, name)})"
                raise _fail(spec.name, why, node_id)


def final_nodes_make_the_video(spec: PipelineSpec) -> None:
    """A job's result is its last node's video: a pipeline that ends elsewhere would succeed with nothing to give."""
    if not _io_known(spec):
        return
    has_outgoing = {edge.source for edge in spec.edges}
    for node in spec.nodes:
        if node.id not in has_outgoing and FINAL_ARTIFACT not in TASK_IO[node.task].artifacts:
            makers = _makers("artifact", FINAL_ARTIFACT)
            raise _fail(
                spec.name, f"ends the pipeline but makes no '{FINAL_ARTIFACT}', the job's result ({makers})", node.id
            )


def _io_known(spec: PipelineSpec) -> bool:
    """Every node's task declares what it needs and makes (a plugin task registered without may not)."""
    return all(node.task in TASK_IO for node in spec.nodes)


def _offers(io: TaskIO) -> set[tuple[str, str]]:
    return {("artifact", n) for n in io.artifacts} | {("value", n) for n in io.values}


def _makers(kind: str, name: str) -> str:
    tasks = [task for task, io in TASK_IO.items() if (kind, name) in _offers(io)]
    return f"made by task {' or '.join(tasks)}" if tasks else "no task makes it"


NODE_RULES: tuple[Callable[[PipelineSpec, int, NodeSpec], None], ...] = (
    node_id_is_a_key_part,
    node_id_is_unique,
    plane_is_known,
    task_is_known,
    task_runs_on_its_plane,
)
EDGE_RULES: tuple[Callable[[PipelineSpec, EdgeSpec], None], ...] = (edge_ends_are_nodes, edge_is_not_a_loop)
GRAPH_RULES: tuple[Callable[[PipelineSpec], None], ...] = (
    graph_is_acyclic,
    start_has_no_inputs,
    every_node_is_reachable,
    inputs_are_made_upstream,
    final_nodes_make_the_video,
)


def parse_pipelines(data: Any, source: str = "pipelines.json") -> dict[str, PipelineSpec]:
    """Accept {name: pipeline, ...} or {"pipelines": {name: pipeline, ...}}."""
    if isinstance(data, dict) and isinstance(data.get("pipelines"), dict):
        data = data["pipelines"]
    if not isinstance(data, dict) or not data:
        raise PipelineError(f"{source}: expected an object mapping pipeline names to {{nodes, edges}}")
    return {name: validate_pipeline(name, raw) for name, raw in data.items()}


MAX_PIPELINES_BYTES = 1 << 20  # a pipelines file is a few KB; 1 MiB leaves room for hundreds of pipelines


def load_pipelines_file(path: Path | str) -> dict[str, PipelineSpec]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PIPELINES_BYTES + 1)
    except OSError as err:
        raise PipelineError(f"{path}: cannot read pipelines file ({err.strerror or err})") from None
    if len(raw) > MAX_PIPELINES_BYTES:
        raise PipelineError(f"{path}: a pipelines file is at most {MAX_PIPELINES_BYTES:,} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise PipelineError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except RecursionError:  # the decoder recurses per nesting level: '[' * 100000 is valid-looking and fatal
        raise PipelineError(f"{path}: not valid JSON (nested too deeply)") from None
    return parse_pipelines(data, str(path))


def default_pipelines_path() -> Path:
    return Path(str(resources.files("spinbot.pipelines") / "pipelines.json"))


def load_pipelines(path: Path | str | None = None) -> dict[str, PipelineSpec]:
    """The user's file (argument or SPINBOT_PIPELINES), else the one shipped with the package."""
    if path is None:
        from spinbot.settings import get_settings

        path = get_settings().pipelines or default_pipelines_path()
    return load_pipelines_file(path)


def get_pipeline(name: str, path: Path | str | None = None) -> PipelineSpec:
    pipelines = load_pipelines(path)
    if name not in pipelines:
        raise PipelineError(f"unknown pipeline {echo(name)} (known: {', '.join(sorted(pipelines))})")
    return pipelines[name]
