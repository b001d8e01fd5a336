"""Text in, text out: load a target/draft pair once, then generate or stream with any strategy.

>>> with Pair("target.gguf", "draft.gguf") as pair:
...     pair.generate([{"role": "user", "content": "Hi"}], max_tokens=32, temperature=0).text
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgespec import chat, exactness
from edgespec.compat import check_compatible
from edgespec.costs import CostModel
from edgespec.engine import Engine, Planner
from edgespec.errors import InvalidParameterError, TemplateError
from edgespec.llama import Context, Model, set_tiled_matmul
from edgespec.measure import device_costs, exact_cap
from edgespec.options import DRAFT_LIMIT, STRATEGIES, GenerationOptions, check
from edgespec.planner import AutoPlanner, FixedPlanner
from edgespec.proposers import DraftModel, PromptLookup
from edgespec.sampling import SamplingParams
from edgespec.stats import Stats
from edgespec.textstream import TextStream

__all__ = ["STRATEGIES", "Generation", "GenerationOptions", "Pair", "Prompt", "Result", "Stats", "TokenEvent"]

logger = logging.getLogger(__name__)

Prompt = str | Sequence[chat.Message]
"""A raw text prompt, or chat messages rendered with the target's chat template."""


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
    context) or ``"interrupted"``."""
    stats: Stats
    strategy: str


class Generation:
    """A generation in progress: iterate for :class:`TokenEvent`; ``result`` once it is done.

    If iteration is interrupted (Ctrl-C, a closed connection), ``result`` still describes the
    tokens produced so far, with finish reason ``"interrupted"``.
    """

    def __init__(self, events: Iterator[TokenEvent], strategy: str, stats: Stats, text: TextStream) -> None:
        self._events = events
        self.strategy = strategy
        self.stats = stats
        self.token_ids: list[int] = []
        self.finish_reason = "interrupted"
        self._text = text

    def __iter__(self) -> Iterator[TokenEvent]:
        return self._events

    def close(self) -> None:
        """Stop generating now (a client went away); ``result`` keeps what was produced."""
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    @property
    def result(self) -> Result:
        """The result so far (the final one once iteration has ended)."""
        return Result(self._text.text, list(self.token_ids), self.finish_reason, self.stats, self.strategy)


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
            pair loaded the same way). By default greedy output follows the target's argmax at
            every verified position, but a batched verification rounds differently from a single
            step, so after a near-tie it can part from a run without speculation. Exact mode loads
            the target with kernels that do not depend on the batch size (see
            :mod:`edgespec.exactness`) and caps each verification at the largest batch found
            bit-identical on this device (:attr:`batch_cap`, checked up to ``max_draft + 1``, for
            every strategy, ``auto`` included), at some cost in speed.

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
        if n_ctx is not None and n_ctx < 8:
            raise InvalidParameterError(f"the context size must be at least 8 tokens, got {n_ctx}")
        if n_threads is not None and n_threads < 1:
            raise InvalidParameterError(f"threads must be at least 1, got {n_threads}")
        check("max_draft", max_draft)
        if not 0 <= p_min <= 1:
            raise InvalidParameterError(f"p-min must be in [0, 1], got {p_min}")
        threads = n_threads or _available_cpus()
        self.n_gpu_layers = n_gpu_layers
        self.exact = exact
        if exact and not set_tiled_matmul(False):
            logger.warning(
                "exact mode: ggml's tiled matmul was already on in this process; batches are capped lower"
            )
        self.target = Model(target, n_gpu_layers=n_gpu_layers, **(exactness.MODEL_OPTIONS if exact else {}))
        self.draft: Model | None = None
        if draft is not None:
            self.draft = Model(draft, n_gpu_layers=n_gpu_layers)
            check_compatible(self.target, self.draft)
        n_ctx = n_ctx or min(4096, self.target.n_ctx_train)
        batch = min(n_batch, n_ctx)
        context = exactness.make_context if exact else Context
        self.target_ctx = context(self.target, n_ctx=n_ctx, n_batch=batch, n_threads=threads)
        self.engine = Engine(self.target_ctx)
        self.batch_cap: int | None = None
        """Exact mode: the most tokens one verification decodes (guesses + 1); None otherwise."""
        if exact:
            # Checked up to the longest verification this pair's options allow (--draft-max + 1).
            self.batch_cap = exact_cap(self.target_ctx, n_gpu_layers, min(max_draft + 1, batch))
            if note := exactness.no_speculation_note(self.batch_cap, self.target_ctx):
                logger.warning("%s", note)
        self.lookup = PromptLookup()
        self.draft_model: DraftModel | None = None
        if self.draft is not None:
            draft_ctx = Context(self.draft, n_ctx=n_ctx, n_batch=batch, n_threads=threads)
            self.draft_model = DraftModel(draft_ctx, self.target.n_vocab, p_min)
        self.max_draft = max_draft
        self._auto: AutoPlanner | None = None

    @property
    def n_ctx(self) -> int:
        """The context size in tokens."""
        return self.target_ctx.n_ctx

    def costs(self, refresh: bool = False) -> CostModel:
        """This device's verification and drafting costs (measured once, then cached on disk)."""
        if self._auto is None or refresh:
            draft_ctx = self.draft_model.ctx if self.draft_model else None
            costs = device_costs(self.target_ctx, draft_ctx, self.n_gpu_layers, refresh)
            self.engine.reset()  # measuring used the caches
            if self.draft_model:
                self.draft_model.reset()
            self._auto = AutoPlanner(costs, self.lookup, self.draft_model, self.max_draft)
        return self._auto.costs

    def check_strategy(self, strategy: str) -> None:
        """Raise :class:`InvalidParameterError` unless this pair can run ``strategy``."""
        check("strategy", strategy)
        if strategy == "draft" and self.draft_model is None:
            raise InvalidParameterError("strategy 'draft' needs a draft model (--draft); this pair has none")

    def planner(self, strategy: str, max_draft: int | None = None) -> Planner:
        """The planner behind a strategy name; fixed strategies guess ``max_draft`` tokens a step."""
        self.check_strategy(strategy)
        k = max_draft or self.max_draft
        if strategy == "none":
            return FixedPlanner(None, 0)
        if strategy == "lookup":
            return FixedPlanner(self.lookup, k)
        if strategy == "draft":
            return FixedPlanner(self.draft_model, k)
        if strategy == "auto":
            self.costs()
            assert self._auto is not None
            return self._auto
        raise AssertionError(strategy)  # check_strategy knows every strategy

    def render_prompt(self, messages: Sequence[chat.Message], chat_template: str | None = None) -> str:
        """Chat messages as prompt text, through ``chat_template`` or the target's own template."""
        template = chat_template or self.target.chat_template()
        if template is None:
            raise TemplateError(
                f"{self.target.path.name} has no chat template; give a raw prompt (--raw) or a template"
            )
        return chat.render(
            template,
            messages,
            bos_token=self._special_text(self.target.bos),
            eos_token=self._special_text(self.target.eos),
        )

    def _special_text(self, token: int) -> str:
        return self.target.token_bytes(token, special=True).decode("utf-8", "replace")

    def tokenize_prompt(self, prompt: Prompt | list[int], chat_template: str | None = None) -> list[int]:
        """Prompt tokens: raw text as is, chat messages through the chat template, token ids as given."""
        if isinstance(prompt, str):
            return self.target.tokenize(prompt, add_special=True, parse_special=True)
        ids = [t for t in prompt if isinstance(t, int)]
        if len(ids) == len(prompt):  # token ids (or none at all)
            return ids
        if ids:
            raise InvalidParameterError("a prompt is text, chat messages or token ids, not a mix of them")
        text = self.render_prompt([m for m in prompt if not isinstance(m, int)], chat_template)
        # Templates that write the BOS themselves must not get a second one from add_special.
        bos = self._special_text(self.target.bos)
        return self.target.tokenize(text, add_special=not (bos and text.startswith(bos)), parse_special=True)

    def stream(
        self,
        prompt: Prompt | list[int],
        options: GenerationOptions | None = None,
        *,
        stop_token_ids: Sequence[int] = (),
        chat_template: str | None = None,
        **changes: Any,
    ) -> Generation:
        """Start generating; iterate the returned :class:`Generation` for token events.

        ``prompt`` is raw text, chat messages, or token ids. ``options`` (default:
        :class:`GenerationOptions`'s defaults) says how; keyword ``changes`` override its fields
        (``max_tokens=64, temperature=0``). Generation ends at an end-of-generation token, a stop
        string or token, ``max_tokens``, or a full context. ``options.max_draft`` caps the tokens
        guessed per step for this generation, whatever the strategy (None: the pair's).
        """
        opts = options or GenerationOptions()
        if changes:
            opts = opts.replace(**changes)
        params = SamplingParams(opts.temperature, opts.top_k, opts.top_p, opts.min_p, opts.seed)
        # Messages are checked (and the prompt tokenized) before the planner is built: building
        # `auto`'s the first time measures the device, seconds that a bad request must not cost.
        tokens = self.tokenize_prompt(prompt, chat_template)
        planner = self.planner(opts.strategy, opts.max_draft)
        stats = Stats(prompt_tokens=len(tokens))
        text = TextStream(opts.stop)
        gen = Generation(iter(()), opts.strategy, stats, text)
        t0 = time.perf_counter()
        stats.prompt_prefilled = self.engine.start(tokens)
        stats.prompt_seconds = time.perf_counter() - t0
        limit = opts.max_draft or DRAFT_LIMIT
        if self.batch_cap is not None:
            limit = min(limit, self.batch_cap - 1)  # exact mode: no batch beyond the bit-identical ones
        gen._events = self._events(gen, planner, params, opts.max_tokens, set(stop_token_ids), limit)
        return gen

    def _events(
        self,
        gen: Generation,
        planner: Planner,
        params: SamplingParams,
        max_tokens: int,
        stop_ids: set[int],
        max_draft: int,
    ) -> Iterator[TokenEvent]:
        stats, text = gen.stats, gen._text
        t0 = time.perf_counter()
        try:
            gen.finish_reason = "length"  # max tokens or a full context, unless a stop comes first
            for step in self.engine.steps(planner, params, params.rng(), max_tokens, max_draft):
                stats.add(step)
                if stats.steps == 1:
                    stats.ttft_seconds = stats.prompt_seconds + time.perf_counter() - t0
                for i, token in enumerate(step.tokens[: max_tokens - len(gen.token_ids)]):
                    if self.target.is_eog(token) or token in stop_ids:
                        gen.finish_reason = "stop"
                        break
                    gen.token_ids.append(token)
                    stats.n_tokens += 1
                    piece = text.push(self.target.token_bytes(token))
                    if piece:
                        yield TokenEvent(token, piece, i < step.n_accepted)
                    elif not text.stopped:
                        yield TokenEvent(token, "", i < step.n_accepted)
                    if text.stopped:
                        gen.finish_reason = "stop"
                        break
                if gen.finish_reason == "stop":
                    break
            rest = text.flush()
            if rest:
                yield TokenEvent(None, rest, False)
        except BaseException:  # Ctrl-C, or the consumer closing the stream early
            gen.finish_reason = "interrupted"
            raise
        finally:
            stats.decode_seconds = time.perf_counter() - t0
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

    def top_two_gap(self, tokens: Sequence[int]) -> float:
        """The target's top-1 minus top-2 logit for the token after ``tokens``, from a fresh cache.

        Batched verification and single-token decoding may round differently in the last bits;
        where two greedy runs part, a small gap here says it was a near-tie, not a bug.
        """
        self.reset()
        logits = self.target_ctx.decode(list(tokens), 0, 1)[0]
        self.reset()
        top = np.sort(logits)[-2:]
        return float(top[1] - top[0])

    def reset(self, forget_earlier: bool = False) -> None:
        """Forget cached conversation state in both models (a new conversation).

        With ``forget_earlier``, lookups also forget the prompts and replies of earlier requests,
        so that the next generation copies from nothing but its own text (benchmarks)."""
        self.engine.reset()
        if self.draft_model:
            self.draft_model.reset()
        if forget_earlier:
            self.lookup.reset()

    def close(self) -> None:
        """Free contexts, then models."""
        if self.draft_model:
            self.draft_model.ctx.close()
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


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
