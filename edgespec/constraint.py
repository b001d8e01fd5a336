"""Constraints on generated text: a JSON schema, any JSON object, a regular expression or a grammar.

A :class:`Constraint` says what the output must match; llguidance compiles it (and checks it here,
before any model is asked) and, at generation time, masks every token that would break it
(:mod:`edgespec.grammar`). llguidance was chosen over xgrammar: it needs nothing but its own
small wheel (xgrammar's pulls in torch and transformers), computes a mask for a 152k vocabulary
in tens of microseconds, validates a run of guessed tokens and rolls back, lists the tokens a
grammar forces, and reads JSON schemas, regular expressions, Lark and llama.cpp's GBNF alike.

>>> Constraint.json_schema({"type": "object", "properties": {"n": {"type": "integer"}}}).kind
'json_schema'
>>> Constraint.regex("(yes|no)").source
'(yes|no)'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import llguidance

from edgespec.errors import ConstraintError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

KINDS = ("json_schema", "json_object", "regex", "grammar")
"""json_schema: JSON valid under a schema; json_object: any JSON object; regex: text matching a
regular expression (Rust's syntax); grammar: text of a grammar in GBNF (llama.cpp's) or Lark."""

JSON_LAYOUT: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
"""How JSON is laid out: on one line, as ``json.dumps`` writes it. With no free whitespace, a
schema's keys and punctuation are forced, and forced tokens cost no model's choice. A schema's own
``x-guidance`` options (llguidance's) take precedence."""


@dataclass(frozen=True)
class Constraint:
    """What generated text must match. Checked when made: a malformed or unsupported schema,
    expression or grammar raises :class:`~edgespec.errors.ConstraintError` saying what is wrong.

    Make one with :meth:`json_schema`, :meth:`json_object`, :meth:`regex` or :meth:`grammar`.
    """

    kind: str
    """One of :data:`KINDS`."""
    source: str = ""
    """The JSON schema (as JSON text), the regular expression or the grammar; empty for
    ``json_object``."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConstraintError(f"unknown constraint kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if not isinstance(self.source, str):
            raise ConstraintError(f"a constraint's source must be text, got {type(self.source).__name__}")
        _ = self.compiled  # check it now, before any generation starts

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | str) -> Constraint:
        """JSON valid under ``schema`` (a JSON schema as an object, or its JSON text)."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise ConstraintError(f"the JSON schema is not valid JSON: {exc}") from None
        if not isinstance(schema, Mapping):
            raise ConstraintError(f"a JSON schema must be an object, got {_kind(schema)}")
        return cls("json_schema", json.dumps(schema, ensure_ascii=False))

    @classmethod
    def json_object(cls) -> Constraint:
        """Any JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
        return cls("json_object")

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """Text matching ``pattern`` in full (Rust regex syntax: no look-around, no backreferences)."""
        return cls("regex", pattern)

    @classmethod
    def grammar(cls, text: str) -> Constraint:
        """Text of a grammar: llama.cpp's GBNF (``root ::= ...``) or Lark (``start: ...``, with
        llguidance's extensions such as ``%json {...}`` for a JSON schema inside)."""
        return cls("grammar", text)

    @cached_property
    def compiled(self) -> str:
        """The grammar in llguidance's own form, checked."""
        try:
            if self.kind in ("json_schema", "json_object"):
                schema = self.source or '{"type": "object"}'
                grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_LAYOUT)
            elif self.kind == "regex":
                grammar = llguidance.LLMatcher.grammar_from_regex(self.source)
            else:
                grammar = llguidance.grammar_from("grammar", self.source)
        except ValueError as exc:
            raise ConstraintError(f"{self._what()}: {one_line(str(exc))}") from None
        problem = llguidance.LLMatcher.validate_grammar(grammar)
        if problem:
            raise ConstraintError(f"{self._what()}: {one_line(problem)}")
        return grammar

    def _what(self) -> str:
        return {
            "json_schema": "invalid JSON schema",
            "json_object": "invalid JSON constraint",
            "regex": "invalid regular expression",
            "grammar": "invalid grammar",
        }[self.kind]


def one_line(text: str) -> str:
    """llguidance's (sometimes multi-line) message as one line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:3]) if lines else "rejected"


def _kind(value: object) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
