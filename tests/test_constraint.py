"""Constraints are checked when made: each malformed or unsupported one is refused in one line."""

from __future__ import annotations

import json

import pytest

from edgespec import GenerationOptions
from edgespec.constraint import JSON_LAYOUT, Constraint
from edgespec.errors import ConstraintError, InvalidParameterError

PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


@pytest.mark.parametrize(
    "make",
    [
        lambda: Constraint.json_schema(PERSON),
        lambda: Constraint.json_schema(json.dumps(PERSON)),
        Constraint.json_object,
        lambda: Constraint.regex("[0-9]{3}-[0-9]{4}"),
        lambda: Constraint.grammar('root ::= "yes" | "no"'),  # GBNF
        lambda: Constraint.grammar('start: "yes" | "no"'),  # Lark
    ],
    ids=["schema", "schema-text", "json-object", "regex", "gbnf", "lark"],
)
def test_valid_constraints_compile(make: object) -> None:
    assert callable(make)
    c = make()
    assert isinstance(c, Constraint)
    assert c.compiled  # llguidance's grammar, checked


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: Constraint.json_schema({"type": "strin"}), "invalid JSON schema: Invalid type: strin"),
        (
            lambda: Constraint.json_schema({"type": "array", "uniqueItems": True}),
            'invalid JSON schema: Unimplemented keys: ["uniqueItems"]',
        ),
        (lambda: Constraint.json_schema({"$ref": "#/defs/x"}), "does not exist"),
        (lambda: Constraint.json_schema("{not json"), "the JSON schema is not valid JSON"),
        (lambda: Constraint.json_schema([1, 2]), "a JSON schema must be an object, got a list"),  # type: ignore[arg-type]
        (lambda: Constraint.regex("(("), "invalid regular expression"),
        (lambda: Constraint.grammar("start: foo"), 'invalid grammar: at 1(8): unknown name: "foo"'),
        (lambda: Constraint("xml", "<a/>"), "unknown constraint kind 'xml'"),
    ],
    ids=["bad-type", "unsupported-keyword", "bad-ref", "not-json", "not-object", "regex", "grammar", "kind"],
)
def test_bad_constraints_are_refused_in_one_line(make: object, words: str) -> None:
    assert callable(make)
    with pytest.raises(ConstraintError) as err:
        make()
    assert words in str(err.value)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, InvalidParameterError)  # the CLI and the server treat it as bad input


def test_json_is_laid_out_on_one_line_unless_the_schema_says_otherwise() -> None:
    # The layout is llguidance's default for the schema; an x-guidance in the schema wins.
    assert JSON_LAYOUT["whitespace_flexible"] is False
    flexible = Constraint.json_schema({**PERSON, "x-guidance": {"whitespace_flexible": True}})
    assert flexible.compiled != Constraint.json_schema(PERSON).compiled


def test_generation_options_take_a_constraint() -> None:
    c = Constraint.regex("a+")
    assert GenerationOptions(constraint=c).constraint is c
    assert GenerationOptions().constraint is None
    with pytest.raises(InvalidParameterError, match="constraint must be a Constraint"):
        GenerationOptions(constraint='{"type": "object"}')  # type: ignore[arg-type]
