"""Load and validate pipelines.json (the MySpinBot format: name -> {nodes, edges})."""

from __future__ import annotations

import json
from collections import deque
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spinbot.errors import PipelineError
from spinbot.tasks.catalog import TASK_PLANES

PLANES = ("node", "python")


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
    """Build a PipelineSpec and refuse anything the planner could not run."""
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
        spec = PipelineSpec.model_validate({**raw, "name": name})
    except ValidationError as err:
        first = err.errors()[0]
        raise _fail(name, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None

    ids: set[str] = set()
    for node in spec.nodes:
        if node.id in ids:
            raise _fail(name, "duplicate node id", node.id)
        ids.add(node.id)
        if node.plane not in PLANES:
            raise _fail(name, f"unknown plane '{node.plane}' (expected one of: {', '.join(PLANES)})", node.id)
        plane = TASK_PLANES.get(node.task)
        if plane is None:
            known = ", ".join(sorted(TASK_PLANES))
            raise _fail(name, f"unknown task '{node.task}' (known: {known})", node.id)
        if plane != node.plane:
            raise _fail(name, f"task '{node.task}' runs on plane '{plane}', not '{node.plane}'", node.id)
    for edge in spec.edges:
        for end in (edge.source, edge.target):
            if end not in ids:
                raise _fail(name, f"edge {edge.source} -> {edge.target} names unknown node '{end}'")
        if edge.source == edge.target:
            raise _fail(name, "edge from a node to itself (cycle)", edge.source)
    _refuse_cycles(spec)
    _refuse_unreachable(spec)
    return spec


def _refuse_cycles(spec: PipelineSpec) -> None:
    order = spec.topological_order()
    if len(order) != len(spec.nodes):
        stuck = next(n.id for n in spec.nodes if n.id not in order)
        raise _fail(spec.name, "is part of a cycle", stuck)


def _refuse_unreachable(spec: PipelineSpec) -> None:
    if spec.upstream(spec.start):
        raise _fail(spec.name, "the start node (listed first) must have no incoming edge", spec.start)
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


def parse_pipelines(data: Any, source: str = "pipelines.json") -> dict[str, PipelineSpec]:
    """Accept {name: pipeline, ...} or {"pipelines": {name: pipeline, ...}}."""
    if isinstance(data, dict) and isinstance(data.get("pipelines"), dict):
        data = data["pipelines"]
    if not isinstance(data, dict) or not data:
        raise PipelineError(f"{source}: expected an object mapping pipeline names to {{nodes, edges}}")
    return {name: validate_pipeline(name, raw) for name, raw in data.items()}


def load_pipelines_file(path: Path | str) -> dict[str, PipelineSpec]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PipelineError(f"{path}: cannot read pipelines file ({err.strerror or err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
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
        raise PipelineError(f"unknown pipeline '{name}' (known: {', '.join(sorted(pipelines))})")
    return pipelines[name]


Plane = Literal["node", "python"]
