"""One generation's pipeline: the engine's steps -> tokens -> text events -> :class:`Result`.

:meth:`Pair.stream <edgespec.generate.Pair.stream>` makes a :class:`Generation`; this module knows
nothing of models or strategies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from edgespec import toolcalls
from edgespec.engine import Engine, Planner, Step
from edgespec.errors import Cancelled
from edgespec.grammar import FREE, Grammar, Matcher
from edgespec.llama import Model
from edgespec.options import DRAFT_LIMIT, GenerationOptions
from edgespec.sampling import SamplingParams
from edgespec.stats import Stats
from edgespec.textstream import TextStream
from edgespec.tools import ToolCall


@dataclass(frozen=True)
class TokenEvent:
    """One generated token."""

    token: int | None
    """The token id; None on a last event that only releases held-back text."""
    text: str
    """Text released with this token; may be empty (half a UTF-8 character, or text that could
    begin a stop string), and may include text held back from earlier tokens."""
    from_draft: bool
    """True when the token was a guess the target accepted, False when the target chose it."""


@dataclass
class Result:
    """A finished generation."""

    text: str
    token_ids: list[int]
    finish_reason: str
    """``"stop"`` (end-of-generation token or stop string), ``"length"`` (max tokens or a full
    context), ``"tool_calls"`` (it called tools), ``"constraint"`` (the constraint allowed no
    next token but the end: its matcher failed, and ``Generation.grammar.failed`` says why) or
    ``"interrupted"``."""
    stats: Stats
    strategy: str
    content: str = ""
    """The text with the tool calls taken out (the text itself without tools)."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """The calls the reply made, when the generation had tools (``GenerationOptions.tools``)."""


class Generation:
    """A generation in progress: iterate for :class:`TokenEvent`; ``result`` once it is done.

    Made by :meth:`Pair.stream`; making one prefills the prompt. Iterating runs the pipeline: the
    engine's verification steps, then their tokens (each step counted in ``stats``), then text
    events (ending at an end-of-generation or stop token, a stop string or ``max_tokens``; UTF-8
    held back until whole), then :attr:`result`. If iteration is interrupted (Ctrl-C, a closed
    connection) or cancelled (:meth:`cancel`, from any thread), ``result`` still describes the
    tokens produced so far, with finish reason ``"interrupted"``.

    Args:
        engine: the target's engine; its history becomes ``prompt``.
        prompt: the prompt's tokens.
        planner: chooses each step's guesses.
        options: sampling, ``max_tokens``, ``stop`` and the constraint; ``strategy`` is reported as
            given.
        max_draft: the most tokens one step may guess.
        stop_token_ids: tokens that end the generation like an end-of-generation token.
        finished: called once iteration ends, however it ends (or at :meth:`close`).
        cancel: set from any thread to stop; it also stops a long decode midway (the pair's
            contexts watch it), and before this generation is made, the prompt's reading.
        tool_format: how the reply's tool calls read (:mod:`edgespec.toolcalls`), when it has tools.
    """

    def __init__(
        self,
        engine: Engine,
        prompt: Sequence[int],
        planner: Planner,
        options: GenerationOptions,
        max_draft: int = DRAFT_LIMIT,
        stop_token_ids: Collection[int] = (),
        finished: Callable[[], None] = lambda: None,
        cancel: threading.Event | None = None,
        tool_format: toolcalls.Hermes | None = None,
    ) -> None:
        self._finished: Callable[[], None] | None = None  # set once the prompt is read
        self._cancel = cancel or threading.Event()
        self.strategy = options.strategy
        self.stats = Stats(prompt_tokens=len(prompt))
        self.token_ids: list[int] = []
        self.finish_reason = "interrupted"
        self.tool_calls: list[ToolCall] = []
        self.content: str | None = None
        self._tool_format = tool_format
        self._text = TextStream(options.stop)
        # Made before the prefill: a constraint that does not fit the model fails before any work.
        self.grammar: Grammar = FREE
        """What the output may say next (:mod:`edgespec.grammar`); under a constraint, its matcher."""
        if options.constraint is not None:
            greedy = options.temperature == 0
            self.grammar = Matcher(options.constraint, engine.target.model, len(prompt), greedy)
        t0 = time.perf_counter()
        self.stats.prompt_prefilled = engine.start(prompt)
        self.stats.prompt_seconds = time.perf_counter() - t0
        params = SamplingParams(
            options.temperature, options.top_k, options.top_p, options.min_p, options.seed, self.grammar
        )
        steps = engine.steps(planner, params, params.rng(), options.max_tokens, max_draft)
        tokens = islice(_tokens(steps, self.stats), options.max_tokens)
        self._events = self._text_events(tokens, engine.target.model, set(stop_token_ids))
        self._finished = finished

    def __iter__(self) -> Iterator[TokenEvent]:
        return self._events

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def cancel(self) -> None:
        """Stop as soon as the step in progress is verified; thread-safe. Iteration then ends with
        finish reason ``"interrupted"`` (a step that is a draft catching up on a long prompt stops
        midway)."""
        self._cancel.set()

    def close(self) -> None:
        """Stop generating now (a client went away) and let the pair go; ``result`` keeps what was
        produced. Call it from the thread that iterates, or when nobody does (else :meth:`cancel`)."""
        self._events.close()
        self._finish()

    def __del__(self) -> None:
        # A generation dropped unfinished must not keep the pair from other requests.
        if getattr(self, "_finished", None) is not None:
            self.close()

    def _finish(self) -> None:
        finished, self._finished = self._finished, None
        if finished is not None:
            finished()

    @property
    def result(self) -> Result:
        """The result so far (the final one once iteration has ended)."""
        text = self._text.text
        content = text if self.content is None else self.content
        ids, calls = list(self.token_ids), list(self.tool_calls)
        return Result(text, ids, self.finish_reason, self.stats, self.strategy, content, calls)

    def _text_events(
        self,
        tokens: Iterator[tuple[int, bool]],
        target: Model,
        stop_ids: set[int],
    ) -> Generator[TokenEvent, None, None]:
        stats, text, cancel = self.stats, self._text, self._cancel
        t0 = time.perf_counter()
        try:
            self.finish_reason = "length"  # max tokens or a full context, unless a stop comes first
            for token, from_draft in _until_cancelled(tokens, cancel):
                if not stats.ttft_seconds:  # the first step has just been verified
                    stats.ttft_seconds = stats.prompt_seconds + time.perf_counter() - t0
                if target.is_eog(token) or token in stop_ids:
                    self.finish_reason = "stop"
                    break
                self.token_ids.append(token)
                stats.n_tokens += 1
                piece = text.push(target.token_bytes(token))
                if piece or not text.stopped:  # an empty event still marks the token
                    yield TokenEvent(token, piece, from_draft)
                if text.stopped:
                    self.finish_reason = "stop"
                    break
            if cancel.is_set():
                self.finish_reason = "interrupted"
            if self.finish_reason == "stop" and self.grammar.failed:
                self.finish_reason = "constraint"
            rest = text.flush()
            if rest:
                yield TokenEvent(None, rest, False)
            if self._tool_format is not None:
                self.content, self.tool_calls = toolcalls.split(self._tool_format, text.text)
                if self.tool_calls and self.finish_reason == "stop":
                    self.finish_reason = "tool_calls"
        except BaseException:  # Ctrl-C, or the consumer closing the stream early
            self.finish_reason = "interrupted"
            raise
        finally:
            stats.decode_seconds = time.perf_counter() - t0
            stats.grammar(self.grammar)
            self._finish()


def _tokens(steps: Iterator[Step], stats: Stats) -> Iterator[tuple[int, bool]]:
    """Each step's tokens in order, with whether each was a guess the target accepted."""
    for step in steps:
        stats.add(step)
        for i, token in enumerate(step.tokens):
            yield token, i < step.n_accepted


def _until_cancelled(
    tokens: Iterator[tuple[int, bool]], cancel: threading.Event
) -> Iterator[tuple[int, bool]]:
    """``tokens`` until ``cancel`` is set: checked before each token, and a step stopped midway (a
    draft's long catching up) ends the stream instead of failing it."""
    try:
        for item in tokens:
            if cancel.is_set():
                return
            yield item
    except Cancelled:
        if not cancel.is_set():
            raise
