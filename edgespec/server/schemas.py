"""The request bodies the server accepts: OpenAI's fields, plus edgespec's extensions.

Validation is strict (``"0.5"`` is not a number, ``1`` is not a boolean) and ranges are checked
here, so that every client mistake becomes a 400 before a request reaches the model. Fields other
clients send that edgespec does not use (``presence_penalty``, ``user``, ...) are accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, WithJsonSchema

from edgespec.messages import JSON_SCHEMA
from edgespec.options import DRAFT_LIMIT, STRATEGIES

Strategy = Literal["auto", "draft", "mtp", "lookup", "none"]
assert set(get_args(Strategy)) == set(STRATEGIES)

MAX_STOP = 16
"""Stop strings per request (OpenAI allows 4; llama-server any number)."""


class StreamOptions(BaseModel):
    """``stream_options``: ask for a last chunk with the token usage."""

    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: the schema the reply must follow."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    name: str = Field(description="The schema's name (not used).")
    schema_: dict[str, Any] = Field(alias="schema", description="A JSON schema (llguidance's subset).")
    strict: bool | None = Field(None, description="Always enforced, strict or not.")
    description: str | None = None


class ResponseFormat(BaseModel):
    """``response_format``: free text, any JSON object, or JSON under a schema."""

    model_config = ConfigDict(strict=True, extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class GenerationRequest(BaseModel):
    """The fields chat and text completions share."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    model: str = Field(description="The model id, as GET /v1/models lists it.")
    max_tokens: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Most tokens to generate [default: the server's --max-tokens]."
    )
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = Field(
        None, description="0 is greedy (deterministic)."
    )
    top_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = Field(None, description="Extension: 0 keeps all tokens.")
    min_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = Field(
        None, description="Extension: drop tokens below this fraction of the top token's probability."
    )
    seed: int | None = Field(None, description="Same seed, same request: same text.")
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = Field(None, description="Only 1 choice per request.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    strategy: Strategy | None = Field(
        None,
        description="Extension: auto plans each step by measured cost; draft/mtp/lookup always guess "
        "with that proposer (mtp: the target's own MTP layers); none runs the target alone.",
    )
    response_format: ResponseFormat | None = Field(
        None, description="json_object or json_schema: the reply is JSON (under the schema), always."
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="Extension (llama-server's): a JSON schema the reply must follow."
    )
    grammar: str | None = Field(
        None, description="Extension (llama-server's): a grammar (GBNF or Lark) the reply must follow."
    )
    max_draft: Annotated[int, Field(ge=1, le=DRAFT_LIMIT)] | None = Field(
        None,
        validation_alias=AliasChoices("max_draft", "speculative.n_max"),
        description="Extension (llama-server's speculative.n_max): most tokens guessed per step.",
    )

    def stop_strings(self) -> list[str]:
        """The stop strings as a list, without empty ones."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(GenerationRequest):
    """POST /v1/chat/completions."""

    # Checked by edgespec.messages, the rule the Python API follows too; the schema documents it.
    messages: Annotated[list[Any], WithJsonSchema({"type": "array", "items": JSON_SCHEMA, "minItems": 1})] = (
        Field(description="The conversation: OpenAI's roles, text content (no images).")
    )
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = Field(
        None, description="The newer name of max_tokens; wins when both are given."
    )
    # Checked by edgespec.tools (OpenAI's rules, errors naming the field); the schema documents them.
    tools: list[Any] | None = Field(None, description="Functions the model may call (type 'function').")
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="auto (default with tools), none, required, or {type: function, function: {name}}."
    )
    parallel_tool_calls: bool | None = Field(None, description="Whether required may make several calls.")


class CompletionRequest(GenerationRequest):
    """POST /v1/completions: raw text (or token ids) in, continued text out."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="Text, or token ids; a list of one prompt is accepted, several are not."
    )
