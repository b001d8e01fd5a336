"""Running generations on a loaded pair: :class:`Streaming`, the half of
:class:`~edgespec.generate.Pair` that takes requests (``stream``, ``generate``, ``astream``,
``agenerate``); ``Pair`` loads the models and their contexts.

Every request waits for the pair in line (:class:`~edgespec.access.PairAccess`), names its session
if it has one (:class:`~edgespec.sessions.Sessions`), and can be stopped from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from typing import Any

from edgespec import toolcalls
from edgespec.access import PairAccess
from edgespec.aio import AsyncGeneration
from edgespec.engine import Engine, Planner
from edgespec.generation import Generation, Result
from edgespec.lookup import PromptLookup
from edgespec.options import DRAFT_LIMIT, GenerationOptions
from edgespec.prompts import Prompt, Prompter
from edgespec.sessions import Sessions
from edgespec.strategies import Planners


class Streaming:
    """Generations on a pair's models, one at a time; :class:`~edgespec.generate.Pair` sets the
    parts it uses."""

    engine: Engine
    prompter: Prompter
    """Renders and tokenizes prompts with the target's chat template and vocabulary."""
    planners: Planners
    """The planner behind each strategy name (``auto``'s built on first use)."""
    lookup: PromptLookup
    access: PairAccess
    """Who may use the caches now; requests wait their turn here."""
    sessions: Sessions
    """Conversations set aside, and which one the caches hold (``stream``'s ``session``)."""
    max_draft: int
    batch_cap: int | None

    def stream(
        self,
        prompt: Prompt | list[int],
        options: GenerationOptions | None = None,
        *,
        stop_token_ids: Sequence[int] = (),
        chat_template: str | None = None,
        planner: Planner | None = None,
        session: Hashable | None = None,
        cancel: threading.Event | None = None,
        wait: bool = True,
        **changes: Any,
    ) -> Generation:
        """Prefill the prompt and start generating; iterate the returned :class:`Generation`.

        ``prompt`` is raw text, chat messages, or token ids. ``options`` (default: the defaults of
        :class:`GenerationOptions`) says how; keyword ``changes`` override its fields (``max_tokens=64``).
        Generation ends at an end-of-generation token, a stop string or token, ``max_tokens``, or a full
        context. ``options.max_draft`` caps the tokens guessed per step for this generation, whatever the
        strategy (None: the pair's). ``planner`` replaces the strategy's planner (experiments, tests).

        ``session`` names the conversation (any hashable): the caches of another one are set aside
        and this one's brought back (:mod:`edgespec.sessions`). ``cancel``, set from any thread,
        stops the generation, or the prompt's reading midway (:class:`~edgespec.errors.Cancelled`,
        what was read kept). While another generation runs this waits its turn, or with ``wait``
        False raises :class:`~edgespec.errors.PairBusyError`.
        """
        opts = options or GenerationOptions()
        if changes:
            opts = opts.replace(**changes)
        # Messages are checked (and the prompt tokenized) before the planner is built: building
        # `auto`'s the first time measures the device, seconds that a bad request must not cost.
        self.access.check_open()  # the models are freed once closed
        tokens = self.prompter.tokenize(prompt, chat_template, opts.tools)
        fmt, opts = toolcalls.prepare(opts.tools, prompt, self.prompter, chat_template, opts)
        event = self.access.begin(cancel, wait)
        try:
            if planner is None:
                planner = self.planners.get(opts.strategy, opts.max_draft or self.max_draft)
            self.sessions.switch(session)
            limit = opts.max_draft or DRAFT_LIMIT
            if self.batch_cap is not None:
                limit = min(limit, self.batch_cap - 1)  # exact mode: no batch beyond the bit-identical ones
            gen = Generation(
                self.engine, tokens, planner, opts, limit, stop_token_ids, self._finished, event, fmt
            )
        except BaseException:
            self.access.end()
            raise
        self.access.started(gen)
        return gen

    def _finished(self) -> None:
        # Later requests (other chats, an editor resending a file) may copy from this one.
        self.lookup.remember(self.engine.history)
        self.access.end()

    def astream(
        self, prompt: Prompt | list[int], options: GenerationOptions | None = None, **changes: Any
    ) -> AsyncGeneration:
        """:meth:`stream` for asyncio (``async for event in pair.astream(...)``), on a thread of its
        own; cancelling the reading task stops it within one step. Takes :meth:`stream`'s arguments
        but ``cancel`` (:meth:`AsyncGeneration.cancel <edgespec.aio.AsyncGeneration.cancel>`)."""
        return AsyncGeneration(lambda cancel: self.stream(prompt, options, cancel=cancel, **changes))

    async def agenerate(
        self, prompt: Prompt | list[int], options: GenerationOptions | None = None, **changes: Any
    ) -> Result:
        """:meth:`generate` for asyncio. Takes :meth:`astream`'s arguments."""
        async with self.astream(prompt, options, **changes) as gen:
            async for _ in gen:
                pass
        assert gen.result is not None
        return gen.result

    def generate(
        self, prompt: Prompt | list[int], options: GenerationOptions | None = None, **changes: Any
    ) -> Result:
        """Generate to the end and return the :class:`Result`. Takes :meth:`stream`'s arguments."""
        gen = self.stream(prompt, options, **changes)
        for _ in gen:
            pass
        return gen.result
