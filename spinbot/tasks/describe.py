"""Every task's params in plain words, from the params models' JSON schema: what `spinbot params` prints and what
the page's Advanced section and the CLI's help are built from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spinbot.tasks.base import TaskParams

PLAIN_TYPES = {"integer": "integer", "number": "number", "string": "text", "boolean": "true/false"}
BOUND_WORDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str  # a plain type name: integer, number, text, true/false
    default: Any
    description: str
    choices: tuple[Any, ...] = ()
    bounds: str = ""  # ">= 1, <= 120"
    nullable: bool = False


def describe_params(model: type[TaskParams]) -> list[ParamInfo]:
    schema = model.model_json_schema()
    return [_describe(name, prop) for name, prop in schema.get("properties", {}).items()]


def _describe(name: str, prop: dict[str, Any]) -> ParamInfo:
    variants = prop.get("anyOf", [prop])
    types = [v.get("type") for v in variants]
    kind = next((t for t in types if t not in (None, "null")), "string")
    choices = next(
        (tuple(v["enum"]) if "enum" in v else (v["const"],) for v in variants if "enum" in v or "const" in v), ()
    )
    bounds = ", ".join(f"{word} {v[key]}" for v in variants for key, word in BOUND_WORDS.items() if key in v)
    return ParamInfo(
        name=name,
        type=PLAIN_TYPES.get(kind, kind),
        default=prop.get("default"),
        description=prop.get("description", ""),
        choices=choices,
        bounds=bounds,
        nullable="null" in types,
    )


def plain_value(value: Any) -> str:
    """A default as a user types it after --set NODE.PARAM=."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)
