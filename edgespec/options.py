"""Generation options: one frozen object that owns their names, defaults and allowed values.

Every face derives from :class:`GenerationOptions`: the CLI's sampling flags and chat's ``/set``
are built from its fields' :class:`Rule` (name, flag, range, help), the server starts each request
from a :class:`GenerationOptions` and validates the request's fields through it, and
:meth:`Pair.stream <edgespec.generate.Pair.stream>` takes one. A new option is one new field here.

>>> opts = GenerationOptions(temperature=0, max_tokens=64)
>>> opts.replace(strategy="lookup").strategy
'lookup'
>>> opts.parse("top_p", "0.9").top_p
0.9
>>> opts.parse_setting("temp 0.2").temperature
0.2
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from edgespec.constraint import Constraint
from edgespec.errors import InvalidParameterError
from edgespec.tools import Tools

STRATEGIES = ("auto", "draft", "mtp", "lookup", "none")
"""auto: plan each step by measured cost; draft/mtp/lookup: always that proposer (mtp: the target's
own MTP layers); none: the target alone."""

DRAFT_LIMIT = 63
"""The most tokens one step may guess: with the pending token, a verification batch of 64."""


@dataclass(frozen=True)
class Rule:
    """What one option allows, and how the faces name and explain it."""

    kind: type
    """``int``, ``float``, ``str``, ``tuple`` or another class whose instances are allowed."""
    help: str
    """One line for ``--help``."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """True: ``low`` itself is not allowed."""
    choices: tuple[str, ...] = ()
    none: str | None = None
    """What None means, when None is allowed (``seed``: a fresh random seed)."""
    flag: str | None = None
    """The CLI flag and ``/set`` name (``temp`` for ``temperature``); None: not a sampling flag."""
    note: str = ""
    """Said after the range in errors (``0 is greedy``)."""

    def allows(self, value: object) -> bool:
        """Whether ``value`` is allowed."""
        if value is None:
            return self.none is not None
        if self.choices:
            return value in self.choices
        if self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
        elif isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        if not isinstance(value, (int, float)):  # a str or an object: its type is the rule
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        """What is allowed, in words: ``a number in (0, 1]``, ``an integer >= 1``, ``one of ...``."""
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        else:
            text = {float: "a number", int: "an integer"}.get(self.kind, f"a {self.kind.__name__}")
            lo = None if self.low is None else f"{self.low:g}"
            hi = None if self.high is None else f"{self.high:g}"
            if lo is not None and hi is not None:
                text += f" in {'(' if self.low_open else '['}{lo}, {hi}]"
            elif lo is not None:
                text += f" {'>' if self.low_open else '>='} {lo}"
            elif hi is not None:
                text += f" <= {hi}"
        if self.note:
            text += f" ({self.note})"
        if self.none is not None:
            text += f", or 'none' for {self.none}"
        return text

    def parse(self, text: str) -> object:
        """The value written as ``text`` (``/set``); raises ValueError when it is not one allowed."""
        text = text.strip()
        if self.none is not None and text.lower() in ("none", "random"):
            return None
        value: object = text if self.kind is str else self.kind(text)
        if not self.allows(value):
            raise ValueError(text)
        return value


def check(name: str, value: object) -> None:
    """Raise :class:`InvalidParameterError` unless ``value`` is allowed for the option ``name``."""
    rule = RULES[name]
    if not rule.allows(value):
        raise InvalidParameterError(f"{name} must be {rule.describe()}, got {value!r}")


def _option(default: Any, rule: Rule) -> Any:
    return field(default=default, metadata={"rule": rule})


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate: sampling, strategy, length, stops, a constraint on the output and the
    tools the model may call. Frozen; validated when made.

    Defaults are llama.cpp's sampling (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), the
    ``auto`` strategy, and at most 512 new tokens.
    """

    temperature: float = _option(
        0.8, Rule(float, "Temperature; 0 is greedy (deterministic).", 0, flag="temp", note="0 is greedy")
    )
    top_k: int = _option(
        40, Rule(int, "Keep the k most likely tokens (0: all).", 0, flag="top_k", note="0 keeps every token")
    )
    top_p: float = _option(
        0.95,
        Rule(float, "Nucleus sampling: keep this much probability mass.", 0, 1, low_open=True, flag="top_p"),
    )
    min_p: float = _option(
        0.05,
        Rule(float, "Drop tokens below this fraction of the top token's probability.", 0, 1, flag="min_p"),
    )
    seed: int | None = _option(
        None, Rule(int, "Random seed for sampling.", none="a fresh random seed each time", flag="seed")
    )
    max_tokens: int = _option(512, Rule(int, "Most tokens to generate.", 1, flag="max_tokens"))
    strategy: str = _option(
        "auto",
        Rule(
            str,
            "auto: plan each step by measured cost; draft/mtp/lookup: always that proposer "
            "(mtp: the target's own MTP layers); none: the target alone.",
            choices=STRATEGIES,
            flag="strategy",
        ),
    )
    stop: tuple[str, ...] = _option((), Rule(tuple, "Stop when one of these texts appears."))
    max_draft: int | None = _option(
        None, Rule(int, "Most tokens guessed per step.", 1, DRAFT_LIMIT, none="the pair's --draft-max")
    )
    # _option makes a dataclasses.field, as for every field; ruff cannot tell these classes are frozen.
    constraint: Constraint | None = _option(  # noqa: RUF009
        None,
        Rule(
            Constraint,
            "What the output must match: a JSON schema, a regex or a grammar.",
            none="no constraint",
        ),
    )
    tools: Tools | None = _option(  # noqa: RUF009
        None,
        Rule(
            Tools,
            "Functions the model may call (edgespec.tools.check_tools): they go to the chat template, "
            "the reply's calls come back in Result.tool_calls, and a tool_choice that makes the model "
            "call one constrains the reply to a call of it, by its parameters' schema.",
            none="no tools",
        ),
    )

    def __post_init__(self) -> None:
        if not isinstance(self.stop, tuple):  # one string, or a list or any iterable of strings
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if not all(isinstance(s, str) for s in self.stop):
            raise InvalidParameterError(f"stop must be strings, got {self.stop!r}")
        for name, rule in RULES.items():
            value = getattr(self, name)
            if rule.kind is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
            if rule.kind is not tuple:
                check(name, value)

    def replace(self, **changes: Any) -> GenerationOptions:
        """A copy with ``changes`` (field names); an unknown name or a bad value says what is allowed."""
        unknown = sorted(set(changes) - set(RULES))
        if unknown:
            raise InvalidParameterError(f"unknown option {unknown[0]!r}; options: {', '.join(RULES)}")
        return dataclasses.replace(self, **changes)

    def parse(self, flag: str, text: str) -> GenerationOptions:
        """A copy with the option named ``flag`` (``temp``, ``top_k``, ...) read from ``text`` (``/set``)."""
        name = FLAGS.get(flag)
        if name is None:
            raise InvalidParameterError(f"unknown setting {flag!r}; settings: {', '.join(FLAGS)}")
        rule = RULES[name]
        try:
            value = rule.parse(text)
        except ValueError:
            raise InvalidParameterError(f"{flag} must be {rule.describe()}, got {text!r}") from None
        return self.replace(**{name: value})

    def parse_setting(self, setting: str) -> GenerationOptions:
        """A copy with one option set from ``NAME VALUE`` text (chat's ``/set top_p 0.9``); a
        missing or bad name or value says what is allowed."""
        flag, _, text = setting.strip().partition(" ")
        if not text.strip():
            name = FLAGS.get(flag)
            if name is None:
                raise InvalidParameterError(f"give a setting and its value; settings: {', '.join(FLAGS)}")
            raise InvalidParameterError(f"{flag} needs a value: {RULES[name].describe()}")
        return self.parse(flag, text)

    def flags(self) -> dict[str, object]:
        """The sampling flags and their values (``temp=0.8 ...`` for ``/set`` without arguments)."""
        return {flag: getattr(self, name) for flag, name in FLAGS.items()}


RULES: dict[str, Rule] = {f.name: f.metadata["rule"] for f in dataclasses.fields(GenerationOptions)}
"""Each option's rule, by field name, in field order."""
FLAGS: dict[str, str] = {rule.flag: name for name, rule in RULES.items() if rule.flag is not None}
"""The sampling flags (CLI ``--temp``, ``/set temp``) and the field each sets."""
