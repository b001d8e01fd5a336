"""A request's constraint and tools: OpenAI's ``response_format``, llama-server's ``json_schema`` and
``grammar``, and ``tools`` with ``tool_choice``. Checked on the event loop, so that a bad schema or
tool is a 400 naming its field before the request waits for the model."""

from __future__ import annotations

from collections.abc import Callable

from edgespec.constraint import Constraint
from edgespec.errors import ConstraintError
from edgespec.server.schemas import ChatCompletionRequest, GenerationRequest
from edgespec.tools import Tools, check_tools


def request_constraint(body: GenerationRequest) -> Constraint | None:
    """What the reply must match, or None; at most one of the fields that say so."""
    fmt = body.response_format
    if fmt is not None and fmt.type == "text":
        fmt = None
    given = [
        name
        for name, value in (
            ("response_format", fmt),
            ("json_schema", body.json_schema),
            ("grammar", body.grammar),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ConstraintError(f"give one of {' and '.join(given)}, not both", given[1])
    if fmt is not None and fmt.type == "json_object":
        return Constraint.json_object()
    if fmt is not None:
        spec = fmt.json_schema
        if spec is None:
            raise ConstraintError("missing; give {name, schema}", "response_format.json_schema")
        return _naming("response_format.json_schema.schema", lambda: Constraint.json_schema(spec.schema_))
    if body.json_schema is not None:
        schema = body.json_schema
        return _naming("json_schema", lambda: Constraint.json_schema(schema))
    if body.grammar is not None:
        grammar = body.grammar
        return _naming("grammar", lambda: Constraint.grammar(grammar))
    return None


def request_tools(body: GenerationRequest) -> Tools | None:
    """The request's tools (chat completions only), checked as OpenAI checks them."""
    if not isinstance(body, ChatCompletionRequest):
        return None
    parallel = True if body.parallel_tool_calls is None else body.parallel_tool_calls
    return check_tools(body.tools, body.tool_choice, parallel)


def _naming(param: str, make: Callable[[], Constraint]) -> Constraint:
    """``make()``, its error naming the request's field."""
    try:
        return make()
    except ConstraintError as exc:
        raise ConstraintError(str(exc), param) from None
