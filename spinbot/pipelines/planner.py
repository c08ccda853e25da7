"""Turn a PipelineSpec into a LangGraph StateGraph. Each graph node runs one pipeline node through a callback."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from spinbot.errors import PipelineError
from spinbot.pipelines.spec import PipelineSpec


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return operator.or_(left or {}, right or {})


class JobState(TypedDict):
    """The explicit graph state: the job id and each finished node's output, by node id."""

    job_id: str
    outputs: Annotated[dict[str, dict[str, Any]], _merge]


# (job id, node id, outputs of the node's ancestors) -> this node's output
NodeRunner = Callable[[str, str, dict[str, dict[str, Any]]], dict[str, Any]]


def build_graph(spec: PipelineSpec, run_node: NodeRunner) -> StateGraph:
    for reserved in JobState.__annotations__:
        if reserved in spec.nodes_by_id:
            raise PipelineError(f"pipeline '{spec.name}', node '{reserved}': this id is reserved by the planner")
    graph = StateGraph(JobState)
    for node in spec.nodes:
        graph.add_node(node.id, _graph_node(spec, node.id, run_node))
    for node in spec.nodes:
        upstream = spec.upstream(node.id)
        if not upstream:
            graph.add_edge(START, node.id)
        elif len(upstream) == 1:
            graph.add_edge(upstream[0], node.id)
        else:
            graph.add_edge(upstream, node.id)  # fan-in: LangGraph waits for every upstream node
        if not spec.downstream(node.id):
            graph.add_edge(node.id, END)
    return graph


def _graph_node(spec: PipelineSpec, node_id: str, run_node: NodeRunner):
    ancestors = spec.ancestors(node_id)

    def run(state: JobState) -> dict[str, Any]:
        upstream = {a: state["outputs"][a] for a in ancestors}
        return {"outputs": {node_id: run_node(state["job_id"], node_id, upstream)}}

    run.__name__ = f"node_{node_id}"
    return run


def compile_graph(spec: PipelineSpec, run_node: NodeRunner, checkpointer: Any):
    return build_graph(spec, run_node).compile(checkpointer=checkpointer)
