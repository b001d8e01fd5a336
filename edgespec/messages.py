"""Chat messages checked as OpenAI's API checks them, for the Python API and the server alike.

A conversation is a non-empty list of objects with a ``role`` (``system``, ``developer``, ``user``,
``assistant`` or ``tool``) and a ``content``: a string, or a list of text parts
(``{"type": "text", "text": ...}``). An assistant message may leave its content out (or null) only
when it carries ``tool_calls``; a tool message answers one by its ``tool_call_id``. Keys OpenAI
would not use are ignored, so that front ends which keep their own fields in messages still work.

>>> check_messages([{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}])
[{'role': 'system', 'content': 'Be brief.'}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgespec.errors import MessageError

ROLES = ("system", "developer", "user", "assistant", "tool")
IMAGE_PARTS = ("image_url", "input_image", "image")

_TEXT_PART: dict[str, Any] = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
}
JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "role": {"enum": list(ROLES)},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": _TEXT_PART, "minItems": 1},
                {"type": "null"},
            ]
        },
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": {"type": "string"},
    },
    "required": ["role", "content"],
}
"""One message's shape, for the server's API documentation; :func:`check_messages` is the rule."""


def check_messages(messages: object) -> list[dict[str, Any]]:
    """The conversation as chat templates take it, or :class:`MessageError` for the first field
    OpenAI would refuse (its ``param`` names the field, e.g. ``messages[1].role``).

    What comes back: ``developer`` becomes ``system`` (templates do not know it), text parts are
    joined into one string, a missing assistant content becomes ``""``, and only the keys templates
    use are kept (``role``, ``content``, ``name``, ``tool_calls``, ``tool_call_id``).
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise MessageError("messages", f"expected a list of messages, got {_kind(messages)}", "invalid_type")
    if not messages:
        raise MessageError("messages", "give at least one message", "empty_array")
    return [_message(message, f"messages[{i}]") for i, message in enumerate(messages)]


def _message(message: object, at: str) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise MessageError(
            at, f"expected an object with a role and a content, got {_kind(message)}", "invalid_type"
        )
    role = message.get("role")
    if role is None:
        raise MessageError(
            f"{at}.role", f"missing; give one of {_choices(ROLES)}", "missing_required_parameter"
        )
    if role not in ROLES:
        raise MessageError(f"{at}.role", f"invalid value {role!r}; supported values are {_choices(ROLES)}")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role}
    tool_calls = _tool_calls(message.get("tool_calls"), f"{at}.tool_calls") if role == "assistant" else None
    content = message.get("content")
    if content is None and tool_calls is None:
        why = " (an assistant message may leave it out only with tool_calls)" if role == "assistant" else ""
        raise MessageError(
            f"{at}.content",
            f"missing; give a string or a list of text parts{why}",
            "missing_required_parameter",
        )
    out["content"] = "" if content is None else _content(content, f"{at}.content")
    if tool_calls is not None:
        out["tool_calls"] = tool_calls
    if role == "tool":
        out["tool_call_id"] = _string(message.get("tool_call_id"), f"{at}.tool_call_id")
    if message.get("name") is not None:
        out["name"] = _string(message["name"], f"{at}.name")
    return out


def _content(content: object, at: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (bytes, Mapping)) or not isinstance(content, Sequence):
        raise MessageError(
            at, f"expected a string or a list of text parts, got {_kind(content)}", "invalid_type"
        )
    if not content:
        raise MessageError(at, "an empty list of parts; give at least one text part", "empty_array")
    texts = []
    for j, part in enumerate(content):
        where = f"{at}[{j}]"
        if not isinstance(part, Mapping):
            raise MessageError(where, f"expected a text part object, got {_kind(part)}", "invalid_type")
        kind = part.get("type")
        if kind in IMAGE_PARTS:
            raise MessageError(
                f"{where}.type",
                f"{kind} parts are not supported: this model has no vision (text parts only)",
                "unsupported_content",
            )
        if kind != "text":
            problem = "missing" if kind is None else f"invalid value {kind!r}"
            raise MessageError(
                f"{where}.type", f"{problem}; only 'text' parts are supported", "unsupported_content"
            )
        texts.append(_string(part.get("text"), f"{where}.text"))
    return "".join(texts)


def _tool_calls(calls: object, at: str) -> list[dict[str, Any]] | None:
    """Checked tool calls: ``[{"id", "type": "function", "function": {"name", "arguments"}}]``."""
    if calls is None:
        return None
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence) or not calls:
        raise MessageError(at, f"expected a non-empty list of tool calls, got {_kind(calls)}", "invalid_type")
    out = []
    for j, call in enumerate(calls):
        where = f"{at}[{j}]"
        if not isinstance(call, Mapping):
            raise MessageError(where, f"expected a tool call object, got {_kind(call)}", "invalid_type")
        if call.get("type") != "function":
            raise MessageError(
                f"{where}.type", f"invalid value {call.get('type')!r}; supported values are 'function'"
            )
        function = call.get("function")
        if not isinstance(function, Mapping):
            raise MessageError(
                f"{where}.function",
                "expected an object with a name and arguments",
                "missing_required_parameter",
            )
        out.append(
            {
                "id": _string(call.get("id"), f"{where}.id"),
                "type": "function",
                "function": {
                    "name": _string(function.get("name"), f"{where}.function.name"),
                    "arguments": _string(function.get("arguments"), f"{where}.function.arguments"),
                },
            }
        )
    return out


def _string(value: object, at: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise MessageError(at, "missing; expected a string", "missing_required_parameter")
    raise MessageError(at, f"expected a string, got {_kind(value)}", "invalid_type")


def _kind(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return "a list"
    return names.get(type(value), type(value).__name__)


def _choices(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values)
