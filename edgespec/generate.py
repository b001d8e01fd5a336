"""Text in, text out: load a target/draft pair once, then generate or stream with any strategy.

>>> with Pair("target.gguf", "draft.gguf") as pair:
...     pair.generate([{"role": "user", "content": "Hi"}], max_tokens=32, temperature=0).text
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from edgespec import exactness
from edgespec.access import PairAccess
from edgespec.aio import AsyncGeneration
from edgespec.compat import ASSISTANT_ARCH, check_compatible
from edgespec.costs import CostModel
from edgespec.engine import Engine
from edgespec.errors import InvalidParameterError, MtpUnavailableError
from edgespec.generation import Generation, Result, TokenEvent
from edgespec.llama import Context, HiddenRows, Model, MtpContext, set_tiled_matmul
from edgespec.lookup import PromptLookup
from edgespec.measure import device_costs, exact_cap
from edgespec.mtp import MtpDraft
from edgespec.options import STRATEGIES, GenerationOptions, check
from edgespec.planner import AutoPlanner
from edgespec.prompts import Prompt, Prompter
from edgespec.proposers import DraftModel
from edgespec.sessions import Sessions
from edgespec.stats import Stats
from edgespec.strategies import Planners
from edgespec.streaming import Streaming

__all__ = [
    "STRATEGIES",
    "AsyncGeneration",
    "Generation",
    "GenerationOptions",
    "Pair",
    "Progress",
    "Prompt",
    "Result",
    "Stats",
    "TokenEvent",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
"""``progress(stage, fraction)``: how far a long piece of work (loading, measuring) has come."""


class Pair(Streaming):
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
        progress: called as ``progress(stage, fraction)`` during long work: ``"loading target"``,
            ``"loading draft"``, ``"checking exact mode"``, ``"measuring this device"`` (0 to 1).

    Thread-safe: one generation at a time, the others waiting in the order they asked
    (:mod:`edgespec.access`). A context manager: ``with Pair(...) as pair:`` frees the models.
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
        progress: Progress | None = None,
    ) -> None:
        _check_arguments(n_ctx, n_threads, max_draft, p_min)
        threads = n_threads or _available_cpus()
        self.n_gpu_layers = n_gpu_layers
        self.exact = exact
        self.progress = progress
        self.target, self.draft = _open_models(target, draft, n_gpu_layers, exact, progress)
        n_ctx = n_ctx or min(4096, self.target.n_ctx_train)
        batch = min(n_batch, n_ctx)
        context = exactness.make_context if exact else Context
        self.target_ctx = context(self.target, n_ctx=n_ctx, n_batch=batch, n_threads=threads)
        # Before the target decodes anything: an assistant's context lays out the cache they share.
        self.mtp_draft, no_mtp = _mtp_draft(self.target_ctx, self.draft, p_min)
        shared = self.mtp_draft is not None and self.mtp_draft.ctx.shared
        assistant = self.draft if shared else None  # the draft is Gemma 4's: it drafts as `mtp`
        self.engine = Engine(self.target_ctx)
        longest = min(max_draft + 1, batch)  # the longest verification this pair's options allow
        self.batch_cap = _batch_cap(self.target_ctx, n_gpu_layers, longest, progress) if exact else None
        """Exact mode: the most tokens one verification decodes (guesses + 1); None otherwise."""
        self.lookup = PromptLookup()
        self.draft_model = None if assistant else _draft_model(self.draft, self.target_ctx, p_min)
        self._drafters = [d for d in (self.draft_model, self.mtp_draft) if d is not None]
        self.max_draft = max_draft
        self.prompter = Prompter(self.target)
        no_draft = (
            f"{assistant.path.name} is Gemma 4's assistant: it drafts as 'mtp'"
            if assistant
            else "this pair has none"
        )
        self.planners = Planners(
            self.lookup, self.draft_model, self._build_auto, self.mtp_draft, no_mtp, no_draft
        )
        self.access = PairAccess([self.target_ctx, *(d.ctx for d in self._drafters)])
        self.sessions = Sessions(self.engine, self.draft_model, self.access, mtp=self.mtp_draft)

    @property
    def n_ctx(self) -> int:
        """The context size in tokens."""
        return self.target_ctx.n_ctx

    def costs(self, refresh: bool = False) -> CostModel:
        """This device's verification and drafting costs (measured once, then cached on disk)."""
        with self.access.hold():
            return self.planners.auto(refresh).costs

    def _build_auto(self, refresh: bool) -> AutoPlanner:
        draft_ctx = self.draft_model.ctx if self.draft_model else None
        mtp_ctx = self.mtp_draft.ctx if self.mtp_draft else None
        self.sessions.switch(None)  # measuring uses the caches: set aside the session they hold
        costs = device_costs(
            self.target_ctx, draft_ctx, self.n_gpu_layers, refresh, mtp_ctx, _stage(self.progress)
        )
        self._clear()
        return AutoPlanner(costs, self.lookup, self._drafters, self.max_draft)

    def check_strategy(self, strategy: str) -> None:
        """Raise :class:`InvalidParameterError` unless this pair can run ``strategy``."""
        self.planners.check(strategy)

    def reset(self, forget_earlier: bool = False) -> None:
        """Forget cached conversation state in both models (a new conversation).

        With ``forget_earlier``, lookups also forget the prompts and replies of earlier requests,
        so that the next generation copies from nothing but its own text (benchmarks)."""
        with self.access.hold():
            self._clear()
        if forget_earlier:
            self.lookup.reset()

    def _clear(self) -> None:
        self.engine.reset()
        for drafter in self._drafters:
            drafter.reset()

    def close(self) -> None:
        """Stop the generation in progress, wait for it to let go, then free contexts and models."""
        self.access.close()
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


def _stage(progress: Progress | None, stage: str = "measuring this device") -> Callable[[float], None] | None:
    """``progress`` for one stage of the work, or None."""
    return None if progress is None else lambda fraction: progress(stage, fraction)


def _open_models(
    target: str | Path, draft: str | Path | None, n_gpu_layers: int, exact: bool, progress: Progress | None
) -> tuple[Model, Model | None]:
    """The target (loaded exact mode's way when asked) and the draft, checked to fit the target."""
    if exact and not set_tiled_matmul(False):
        logger.warning(
            "exact mode: ggml's tiled matmul was already on in this process; batches are capped lower"
        )
    options = exactness.MODEL_OPTIONS if exact else {}
    target_model = Model(
        target,
        n_gpu_layers=n_gpu_layers,
        load_mtp=True,
        progress=_stage(progress, "loading target"),
        **options,
    )
    if draft is None:
        return target_model, None
    draft_model = Model(draft, n_gpu_layers=n_gpu_layers, progress=_stage(progress, "loading draft"))
    check_compatible(target_model, draft_model)
    return target_model, draft_model


def _draft_model(draft: Model | None, target_ctx: Context, p_min: float) -> DraftModel | None:
    """The draft model with a context like the target's, or None without one."""
    if draft is None:
        return None
    ctx = Context(draft, n_ctx=target_ctx.n_ctx, n_batch=target_ctx.n_batch, n_threads=target_ctx.n_threads)
    return DraftModel(ctx, target_ctx.model.n_vocab, p_min)


def _mtp_draft(target_ctx: Context, draft: Model | None, p_min: float) -> tuple[MtpDraft | None, str]:
    """The target's MTP layers, or the draft when it is Gemma 4's assistant, as a drafter; or None
    and why not. An assistant that this llama-cpp-python cannot drive is an error (it was asked
    for); MTP layers that it cannot are only a warning."""
    model = target_ctx.model
    assistant = draft if draft is not None and draft.arch == ASSISTANT_ARCH else None
    if assistant is None and not model.n_layer_nextn:
        return None, f"{model.path.name} has none"
    try:
        mtp_ctx = MtpContext(target_ctx, assistant)
        return MtpDraft(mtp_ctx, HiddenRows(target_ctx), p_min), ""
    except MtpUnavailableError as exc:
        if assistant is not None:
            raise MtpUnavailableError(f"{assistant.path.name} cannot draft here: {exc}") from None
        logger.warning("%s: its MTP layers go unused: %s", model.path.name, exc)
        return None, str(exc)


def _batch_cap(target_ctx: Context, n_gpu_layers: int, max_n: int, progress: Progress | None) -> int:
    """Exact mode's verification cap on this device, with a warning when it allows no guess."""
    cap = exact_cap(target_ctx, n_gpu_layers, max_n, progress=_stage(progress, "checking exact mode"))
    if note := exactness.no_speculation_note(cap, target_ctx):
        logger.warning("%s", note)
    return cap


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
