"""Function calling: OpenAI's ``tools`` and ``tool_choice``, checked as OpenAI checks them, and the
calls a model makes.

>>> tools = check_tools([{"type": "function", "function": {"name": "get_weather",
...     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}], "required")
>>> tools.choice, tools.names()
('required', ['get_weather'])
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgespec.constraint import Constraint
from edgespec.errors import ConstraintError

CHOICES = ("auto", "none", "required")
"""auto: the model may call tools or answer; none: it answers; required: it calls at least one.
A function's name (or OpenAI's ``{"type": "function", "function": {"name": ...}}``) makes it call
that one."""

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    """One function the model may call."""

    name: str
    parameters: Mapping[str, Any]
    """The JSON schema of its arguments (an object's)."""
    spec: Mapping[str, Any]
    """The tool as the request gave it (``{"type": "function", "function": {...}}``), for the
    chat template."""


@dataclass(frozen=True)
class Tools:
    """The tools of one request, and how the model must use them."""

    tools: tuple[Tool, ...]
    choice: str = "auto"
    """``auto``, ``none``, ``required``, or the name of the one function to call."""
    parallel: bool = True
    """Whether the model may make more than one call (``parallel_tool_calls``)."""

    def names(self) -> list[str]:
        """The functions' names, in order."""
        return [t.name for t in self.tools]

    @property
    def forced(self) -> tuple[Tool, ...]:
        """The tools one of which must be called (``required``, or the named one); empty when the
        model may answer instead."""
        if self.choice == "required":
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)

    def specs(self) -> list[Mapping[str, Any]]:
        """The tools as chat templates take them."""
        return [t.spec for t in self.tools]


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: which function, and its arguments as JSON text."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's ``tool_calls`` entry."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def check_tools(tools: object, tool_choice: object = None, parallel_tool_calls: bool = True) -> Tools | None:
    """The request's tools, or None without any; :class:`ConstraintError` (its ``param`` naming
    the field) for a tool OpenAI would refuse, a schema that does not compile, or a
    ``tool_choice`` naming no tool."""
    if tools is None:
        if tool_choice not in (None, "none", "auto"):
            raise ConstraintError("give tools to choose from", "tool_choice")
        return None
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ConstraintError("expected a list of tools", "tools")
    checked = tuple(_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools))
    names = [t.name for t in checked]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConstraintError(
                f"a second tool named {name!r}; names must be unique", f"tools[{i}].function.name"
            )
    choice = _choice(tool_choice, names)
    return Tools(checked, choice, parallel_tool_calls) if checked else None


def _tool(tool: object, at: str) -> Tool:
    if not isinstance(tool, Mapping):
        raise ConstraintError("expected a tool object", at)
    if tool.get("type") != "function":
        raise ConstraintError(
            f"invalid value {tool.get('type')!r}; supported values are 'function'", f"{at}.type"
        )
    function = tool.get("function")
    if not isinstance(function, Mapping):
        raise ConstraintError("missing; expected an object with a name", f"{at}.function")
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problem = "missing" if name is None else f"invalid name {name!r}"
        raise ConstraintError(f"{problem}; a name is 1 to 64 letters, digits, _ or -", f"{at}.function.name")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise ConstraintError("expected a string", f"{at}.function.description")
    parameters = function.get("parameters", _NO_PARAMETERS)
    try:
        Constraint.json_schema(parameters)  # compiles, or says why not
    except ConstraintError as exc:
        raise ConstraintError(str(exc), f"{at}.function.parameters") from None
    return Tool(name, parameters, {"type": "function", "function": dict(function)})


def _choice(choice: object, names: list[str]) -> str:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice not in CHOICES:
            raise ConstraintError(
                f"invalid value {choice!r}; use one of {', '.join(CHOICES)} or a function", "tool_choice"
            )
        return choice
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(choice, Mapping) or choice.get("type") != "function" or not isinstance(name, str):
        raise ConstraintError(
            'expected a string or {"type": "function", "function": {"name": ...}}', "tool_choice"
        )
    if name not in names:
        raise ConstraintError(
            f"no tool is named {name!r}; tools: {', '.join(names) or 'none'}", "tool_choice"
        )
    return name


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: a tool call's arguments as an object (OpenAI sends
    JSON text; Qwen's and Llama's templates write ``arguments | tojson``)."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_with_object_arguments(call) for call in calls]}
        out.append(dict(message))
    return out


def _with_object_arguments(call: Mapping[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function", {}))
    with contextlib.suppress(TypeError, json.JSONDecodeError):  # not JSON: the template gets the text
        function["arguments"] = json.loads(function.get("arguments", ""))
    return {**call, "function": function}
