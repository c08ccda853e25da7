"""`--set NODE.PARAM=VALUE` as the CLI reads it (`spinbot run`, `spinbot models`), and the nodes of the default
pipeline that `spinbot params` and a hint name."""

from __future__ import annotations

import shlex
from typing import Any

from spinbot.control.requests import DEFAULT_PIPELINE
from spinbot.errors import InputError, SpinBotError, shorten


def parse_sets(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """NODE.PARAM=VALUE pairs -> {node: {param: value}}; values stay strings and the params models convert them."""
    params: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        target, sep, value = pair.partition("=")
        node, dot, name = target.partition(".")
        if not sep or not dot or not node or not name:
            hint = node_hint(target, value) if sep and not dot else ""
            raise InputError(f"--set expects NODE.PARAM=VALUE, got '{shorten(pair)}'{hint}")
        params.setdefault(node, {})[name] = value
    return params


def node_hint(param: str, value: str) -> str:
    """`--set fps=30`: the nodes of the default pipeline that take that param, as the --set to type instead (a new
    user knows the param from the README or `spinbot params`, not that it is per node)."""
    from spinbot.tasks.catalog import load_task

    try:
        nodes = [node for node, task in tasks_by_name().values() if param in load_task(task).params_model.model_fields]
    except SpinBotError:  # a pipelines file that does not load: the line without the hint
        return ""
    meant = " or ".join(f"--set {shlex.quote(f'{node}.{param}={shorten(value)}')}" for node in dict.fromkeys(nodes))
    return f"; did you mean {meant}?" if meant else ""


def tasks_by_name() -> dict[str, tuple[str, str]]:
    """What `spinbot params` accepts: node id (the --set prefix) -> (node id, task), task names too."""
    from spinbot.pipelines.spec import get_pipeline

    nodes = {n.id: (n.id, n.task) for n in get_pipeline(DEFAULT_PIPELINE).nodes}
    return nodes | {task: (node, task) for node, task in nodes.values()}
