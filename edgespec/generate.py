"""Text in, text out: load a target/draft pair once, then generate or stream with any strategy.

>>> with Pair("target.gguf", "draft.gguf") as pair:
...     pair.generate([{"role": "user", "content": "Hi"}], max_tokens=32, temperature=0).text
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

from edgespec import exactness, toolcalls
from edgespec.compat import check_compatible
from edgespec.costs import CostModel
from edgespec.engine import Engine, Planner, Step
from edgespec.errors import InvalidParameterError, MtpUnavailableError
from edgespec.grammar import FREE, Grammar, Matcher
from edgespec.llama import Context, HiddenRows, Model, MtpContext, set_tiled_matmul
from edgespec.lookup import PromptLookup
from edgespec.measure import device_costs, exact_cap
from edgespec.mtp import MtpDraft
from edgespec.options import DRAFT_LIMIT, STRATEGIES, GenerationOptions, check
from edgespec.planner import AutoPlanner
from edgespec.prompts import Prompt, Prompter
from edgespec.proposers import DraftModel
from edgespec.sampling import SamplingParams
from edgespec.stats import Stats
from edgespec.strategies import Planners
from edgespec.textstream import TextStream
from edgespec.tools import ToolCall

__all__ = ["STRATEGIES", "Generation", "GenerationOptions", "Pair", "Prompt", "Result", "Stats", "TokenEvent"]

logger = logging.getLogger(__name__)


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
    connection), ``result`` still describes the tokens produced so far, with finish reason
    ``"interrupted"``.

    Args:
        engine: the target's engine; its history becomes ``prompt``.
        prompt: the prompt's tokens.
        planner: chooses each step's guesses.
        options: sampling, ``max_tokens``, ``stop`` and the constraint; ``strategy`` is reported as
            given.
        max_draft: the most tokens one step may guess.
        stop_token_ids: tokens that end the generation like an end-of-generation token.
        finished: called once iteration ends, however it ends.
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
        tool_format: toolcalls.Hermes | None = None,
    ) -> None:
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
        self._events = self._text_events(tokens, engine.target.model, set(stop_token_ids), finished)

    def __iter__(self) -> Iterator[TokenEvent]:
        return self._events

    def close(self) -> None:
        """Stop generating now (a client went away); ``result`` keeps what was produced."""
        self._events.close()

    @property
    def result(self) -> Result:
        """The result so far (the final one once iteration has ended)."""
        text = self._text.text
        content = text if self.content is None else self.content
        return Result(
            text,
            list(self.token_ids),
            self.finish_reason,
            self.stats,
            self.strategy,
            content,
            list(self.tool_calls),
        )

    def _text_events(
        self,
        tokens: Iterator[tuple[int, bool]],
        target: Model,
        stop_ids: set[int],
        finished: Callable[[], None],
    ) -> Generator[TokenEvent, None, None]:
        stats, text = self.stats, self._text
        t0 = time.perf_counter()
        try:
            self.finish_reason = "length"  # max tokens or a full context, unless a stop comes first
            for token, from_draft in tokens:
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
            finished()


def _tokens(steps: Iterator[Step], stats: Stats) -> Iterator[tuple[int, bool]]:
    """Each step's tokens in order, with whether each was a guess the target accepted."""
    for step in steps:
        stats.add(step)
        for i, token in enumerate(step.tokens):
            yield token, i < step.n_accepted


class Pair:
    """A target model, an optional draft model, and their contexts, loaded once.

    Args:
        target: path of the target GGUF file.
        draft: path of the draft GGUF file (same tokenizer), or None for lookup/none only.
        n_ctx: context size in tokens; defaults to the model's training context, at most 4096.
        n_threads: CPU threads; defaults to the number of CPUs this process may use.
        n_batch: the largest batch decoded at once (prompt chunks, verification batches).
        n_gpu_layers: layers to offload to the GPU (-1: all) when llama.cpp was built with one.
        max_draft: the most tokens the ``draft`` and ``lookup`` strategies guess per step, unless
            a generation's options say otherwise.
        p_min: the draft model stops guessing when its top probability falls below this.
        exact: make greedy output bit-identical to the target alone (``strategy="none"`` of a
            pair loaded the same way), where by default a batched verification may round
            differently from a single step after a near-tie. The target is loaded with kernels
            that do not depend on the batch size (:mod:`edgespec.exactness`), and every strategy
            verifies at most :attr:`batch_cap` tokens at once, at some cost in speed.

    A context manager: ``with Pair(...) as pair:`` frees the models on leaving.
    """

    def __init__(
        self,
        target: str | Path,
        draft: str | Path | None = None,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        max_draft: int = 16,
        p_min: float = 0.75,
        exact: bool = False,
    ) -> None:
        _check_arguments(n_ctx, n_threads, max_draft, p_min)
        threads = n_threads or _available_cpus()
        self.n_gpu_layers = n_gpu_layers
        self.exact = exact
        self.target, self.draft = _open_models(target, draft, n_gpu_layers, exact)
        n_ctx = n_ctx or min(4096, self.target.n_ctx_train)
        batch = min(n_batch, n_ctx)
        context = exactness.make_context if exact else Context
        self.target_ctx = context(self.target, n_ctx=n_ctx, n_batch=batch, n_threads=threads)
        self.engine = Engine(self.target_ctx)
        longest = min(max_draft + 1, batch)  # the longest verification this pair's options allow
        self.batch_cap = _batch_cap(self.target_ctx, n_gpu_layers, longest) if exact else None
        """Exact mode: the most tokens one verification decodes (guesses + 1); None otherwise."""
        self.lookup = PromptLookup()
        self.draft_model = _draft_model(self.draft, self.target_ctx, p_min)
        self.mtp_draft, no_mtp = _mtp_draft(self.target_ctx, p_min)  # the target's own MTP layers
        self._drafters = [d for d in (self.draft_model, self.mtp_draft) if d is not None]
        self.max_draft = max_draft
        self.prompter = Prompter(self.target)
        """Renders and tokenizes prompts with the target's chat template and vocabulary."""
        self.planners = Planners(self.lookup, self.draft_model, self._build_auto, self.mtp_draft, no_mtp)
        """The planner behind each strategy name (``auto``'s built on first use)."""

    @property
    def n_ctx(self) -> int:
        """The context size in tokens."""
        return self.target_ctx.n_ctx

    def costs(self, refresh: bool = False) -> CostModel:
        """This device's verification and drafting costs (measured once, then cached on disk)."""
        return self.planners.auto(refresh).costs

    def _build_auto(self, refresh: bool) -> AutoPlanner:
        draft_ctx = self.draft_model.ctx if self.draft_model else None
        mtp_ctx = self.mtp_draft.ctx if self.mtp_draft else None
        costs = device_costs(self.target_ctx, draft_ctx, self.n_gpu_layers, refresh, mtp_ctx)
        self.reset()  # measuring used the caches
        return AutoPlanner(costs, self.lookup, self._drafters, self.max_draft)

    def check_strategy(self, strategy: str) -> None:
        """Raise :class:`InvalidParameterError` unless this pair can run ``strategy``."""
        self.planners.check(strategy)

    def stream(
        self,
        prompt: Prompt | list[int],
        options: GenerationOptions | None = None,
        *,
        stop_token_ids: Sequence[int] = (),
        chat_template: str | None = None,
        planner: Planner | None = None,
        **changes: Any,
    ) -> Generation:
        """Prefill the prompt and start generating; iterate the returned :class:`Generation`.

        ``prompt`` is raw text, chat messages, or token ids. ``options`` (default: the defaults of
        :class:`GenerationOptions`) says how; keyword ``changes`` override its fields (``max_tokens=64``).
        Generation ends at an end-of-generation token, a stop string or token, ``max_tokens``, or a full
        context. ``options.max_draft`` caps the tokens guessed per step for this generation, whatever the
        strategy (None: the pair's). ``planner`` replaces the strategy's planner (experiments, tests).
        """
        opts = options or GenerationOptions()
        if changes:
            opts = opts.replace(**changes)
        # Messages are checked (and the prompt tokenized) before the planner is built: building
        # `auto`'s the first time measures the device, seconds that a bad request must not cost.
        tokens = self.prompter.tokenize(prompt, chat_template, opts.tools)
        fmt, opts = toolcalls.prepare(opts.tools, prompt, self.prompter, chat_template, opts)
        if planner is None:
            planner = self.planners.get(opts.strategy, opts.max_draft or self.max_draft)
        limit = opts.max_draft or DRAFT_LIMIT
        if self.batch_cap is not None:
            limit = min(limit, self.batch_cap - 1)  # exact mode: no batch beyond the bit-identical ones
        return Generation(self.engine, tokens, planner, opts, limit, stop_token_ids, self._remember, fmt)

    def _remember(self) -> None:
        # Later requests (other chats, an editor resending a file) may copy from this one.
        self.lookup.remember(self.engine.history)

    def generate(
        self, prompt: Prompt | list[int], options: GenerationOptions | None = None, **changes: Any
    ) -> Result:
        """Generate to the end and return the :class:`Result`. Takes :meth:`stream`'s arguments."""
        gen = self.stream(prompt, options, **changes)
        for _ in gen:
            pass
        return gen.result

    def reset(self, forget_earlier: bool = False) -> None:
        """Forget cached conversation state in both models (a new conversation).

        With ``forget_earlier``, lookups also forget the prompts and replies of earlier requests,
        so that the next generation copies from nothing but its own text (benchmarks)."""
        self.engine.reset()
        for drafter in self._drafters:
            drafter.reset()
        if forget_earlier:
            self.lookup.reset()

    def close(self) -> None:
        """Free contexts, then models."""
        for drafter in self._drafters:
            drafter.ctx.close()
        self.target_ctx.close()
        if self.draft:
            self.draft.close()
        self.target.close()

    def __enter__(self) -> Pair:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_arguments(n_ctx: int | None, n_threads: int | None, max_draft: int, p_min: float) -> None:
    if n_ctx is not None and n_ctx < 8:
        raise InvalidParameterError(f"the context size must be at least 8 tokens, got {n_ctx}")
    if n_threads is not None and n_threads < 1:
        raise InvalidParameterError(f"threads must be at least 1, got {n_threads}")
    check("max_draft", max_draft)
    if not 0 <= p_min <= 1:
        raise InvalidParameterError(f"p-min must be in [0, 1], got {p_min}")


def _open_models(
    target: str | Path, draft: str | Path | None, n_gpu_layers: int, exact: bool
) -> tuple[Model, Model | None]:
    """The target (loaded exact mode's way when asked) and the draft, checked to fit the target."""
    if exact and not set_tiled_matmul(False):
        logger.warning(
            "exact mode: ggml's tiled matmul was already on in this process; batches are capped lower"
        )
    options = exactness.MODEL_OPTIONS if exact else {}
    target_model = Model(target, n_gpu_layers=n_gpu_layers, load_mtp=True, **options)
    if draft is None:
        return target_model, None
    draft_model = Model(draft, n_gpu_layers=n_gpu_layers)
    check_compatible(target_model, draft_model)
    return target_model, draft_model


def _draft_model(draft: Model | None, target_ctx: Context, p_min: float) -> DraftModel | None:
    """The draft model with a context like the target's, or None without one."""
    if draft is None:
        return None
    ctx = Context(draft, n_ctx=target_ctx.n_ctx, n_batch=target_ctx.n_batch, n_threads=target_ctx.n_threads)
    return DraftModel(ctx, target_ctx.model.n_vocab, p_min)


def _mtp_draft(target_ctx: Context, p_min: float) -> tuple[MtpDraft | None, str]:
    """The target's MTP layers as a drafter, or None and why not."""
    model = target_ctx.model
    if not model.n_layer_nextn:
        return None, f"{model.path.name} has none"
    try:
        mtp_ctx = MtpContext(target_ctx)
        return MtpDraft(mtp_ctx, HiddenRows(target_ctx), p_min), ""
    except MtpUnavailableError as exc:
        logger.warning("%s: its MTP layers go unused: %s", model.path.name, exc)
        return None, str(exc)


def _batch_cap(target_ctx: Context, n_gpu_layers: int, max_n: int) -> int:
    """Exact mode's verification cap on this device, with a warning when it allows no guess."""
    cap = exact_cap(target_ctx, n_gpu_layers, max_n)
    if note := exactness.no_speculation_note(cap, target_ctx):
        logger.warning("%s", note)
    return cap


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
