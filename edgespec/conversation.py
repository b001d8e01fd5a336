"""A multi-turn chat over a :class:`~edgespec.generate.Pair` that prefills only what is new.

Each turn's prompt is the previous turn's tokens (its prompt and the reply exactly as generated,
never re-tokenized) followed by the chat template's rendering of only the new part: the end of the
last reply, the new user message and the start of the next reply. The engine and the draft model
both reuse the longest cached prefix, so a turn decodes only those new tokens.

>>> conv = Conversation(pair, system="Be brief.")
>>> with conv.send("Hi") as reply:
...     for event in reply:
...         print(event.text, end="")
>>> conv.turns[-1].reply
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from edgespec import chat, chatfile
from edgespec.errors import ContextOverflowError, EdgespecError, TemplateError
from edgespec.generate import Generation, Pair, TokenEvent
from edgespec.options import GenerationOptions
from edgespec.prompts import Prompter
from edgespec.proposers import DraftModel
from edgespec.turns import Tokens, Totals, Turn

__all__ = ["Conversation", "Reply", "TokenHistory", "Tokens", "Totals", "Turn"]

log = logging.getLogger(__name__)


class TokenHistory:
    """The last prompt and its reply as generated tokens, so that the next prompt reuses them and
    tokenizes only its new part (a reply re-tokenized from its text could come out differently).

    Args:
        prompter: the target's prompter.
        template: the chat template.
    """

    def __init__(self, prompter: Prompter, template: str) -> None:
        self.prompter = prompter
        self.template = template
        self.last: Tokens | None = None
        """The last prompt plus its reply; None: the next prompt is tokenized whole."""
        self.last_prompt: Tokens | None = None
        """The last reply's prompt, for a redo; None: render it again."""

    def forget(self) -> None:
        """The conversation changed other than by a new turn: tokenize the next prompt whole."""
        self.last = self.last_prompt = None

    def prompt(self, messages: Sequence[chat.Message]) -> Tokens:
        """The tokens of ``messages`` ready for a reply: the last prompt and reply plus the new part's
        tokens when their text is a prefix of the rendering, else the whole rendering's."""
        text = self.prompter.render(messages, self.template)
        last = self.last
        if last is not None and text.startswith(last.text):
            new = self.prompter.model.tokenize(text[len(last.text) :], add_special=False, parse_special=True)
            return Tokens(text, last.tokens + new)
        return Tokens(text, self.prompter.tokenize(messages, self.template))

    def redo(self) -> Tokens | None:
        """The last reply is to be generated again: forget it; its prompt, or None to render it again."""
        self.last = None
        return self.last_prompt

    def record(self, prompt: Tokens, token_ids: Sequence[int], text: str) -> None:
        """A reply to ``prompt`` was generated as ``token_ids``, shown as ``text``."""
        self.last_prompt = prompt
        tokens = self.tokens_for(token_ids, text)
        self.last = None if tokens is None else Tokens(prompt.text + text, prompt.tokens + tokens)

    def tokens_for(self, token_ids: Sequence[int], text: str) -> list[int] | None:
        """The reply's tokens whose text is exactly ``text``: a reply cut short may end in part of
        a character that was never shown; those tokens are left out. None if they cannot match."""
        tokens = list(token_ids)
        for _ in range(4):
            if self.prompter.model.detokenize(tokens) == text:
                return tokens
            if not tokens:
                break
            tokens.pop()
        return None


class Reply:
    """A reply being generated. Iterate for :class:`TokenEvent`; use as a context manager.

    Leaving the ``with`` block (normally, or by Ctrl-C or an error) records the turn in the
    conversation: a reply cut short is kept as it stands, with finish reason ``"interrupted"``.

    Args:
        user: the user's message.
        prompt: the prompt the reply continues.
        generation: the reply's generation, started.
        dropped: the oldest turns dropped from the context to make room.
        max_tokens: the reply's token limit.
        draft: the pair's draft model (its catching up is counted), or None.
        finished: called once, when :meth:`finish` records the turn: ``finished(turn, prompt, token_ids)``.
    """

    def __init__(
        self,
        user: str,
        prompt: Tokens,
        generation: Generation,
        dropped: int,
        max_tokens: int,
        draft: DraftModel | None,
        finished: Callable[[Turn, Tokens, list[int]], None],
    ) -> None:
        self.user = user
        self.prompt = prompt
        self.generation = generation
        self.dropped = dropped
        """Oldest turns dropped from the context to make room for this one."""
        self.max_tokens = max_tokens
        self.turn: Turn | None = None
        """The recorded turn, once :meth:`finish` has run."""
        self._done = False
        self._draft = draft
        self._draft_start = _prefilled(draft)
        self._finished = finished

    def __iter__(self) -> Iterator[TokenEvent]:
        yield from self.generation
        self._done = True

    def __enter__(self) -> Reply:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()

    @property
    def context_full(self) -> bool:
        """Whether the reply stopped because the context had no room left."""
        result = self.generation.result
        return result.finish_reason == "length" and len(result.token_ids) < self.max_tokens

    def cancel(self) -> None:
        """Stop the reply after the step in progress; thread-safe (a Stop button)."""
        self.generation.cancel()

    def finish(self) -> Turn:
        """Record the turn (once); the reply so far counts as interrupted if iteration did not end."""
        if self.turn is None:
            self.generation.close()  # lets the pair go, if iteration was left before its end
            result = self.generation.result
            reason = result.finish_reason if self._done else "interrupted"
            draft_prefilled = _prefilled(self._draft) - self._draft_start
            self.turn = Turn(self.user, result.text, reason, result.strategy, result.stats, draft_prefilled)
            self._finished(self.turn, self.prompt, result.token_ids)
        return self.turn


def _prefilled(draft: DraftModel | None) -> int:
    return draft.n_prefilled if draft is not None else 0


class Conversation:
    """Messages, a system prompt, and the token history that lets each turn prefill only new tokens.

    Several conversations may share a pair: each turn names its conversation as the pair's session,
    so the caches of another conversation are set aside and this one's brought back, not re-read
    (:mod:`edgespec.sessions`).

    Args:
        pair: the loaded models.
        system: the system prompt, or None.
        settings: generation options; changeable between turns (:meth:`set_settings`).
    """

    def __init__(
        self, pair: Pair, system: str | None = None, settings: GenerationOptions | None = None
    ) -> None:
        self.pair = pair
        self.system = system or None
        self.settings = settings or GenerationOptions()
        self.turns: list[Turn] = []
        """Every turn since the start or the last :meth:`clear`, dropped ones included."""
        self.first = 0
        """Index of the oldest turn still in the context; older ones were dropped to make room."""
        self.totals = Totals()
        template = pair.target.chat_template()
        if template is None:
            raise TemplateError(
                f"{pair.target.path.name} has no chat template, which chat needs "
                "(use `edgespec generate --raw` for raw text)"
            )
        self.history = TokenHistory(pair.prompter, template)
        """The last prompt and reply as tokens."""
        pair.check_strategy(self.settings.strategy)

    @property
    def messages(self) -> list[chat.Message]:
        """What the model sees: the system prompt, then the turns still in the context."""
        out: list[chat.Message] = [{"role": "system", "content": self.system}] if self.system else []
        for turn in self.turns[self.first :]:
            out += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.reply}]
        return out

    def set_settings(self, settings: GenerationOptions) -> None:
        """Generate the next turns with ``settings`` (``/set``), if this pair can run their strategy."""
        self.pair.check_strategy(settings.strategy)
        self.settings = settings

    def set_system(self, text: str | None) -> None:
        """Replace the system prompt (None: none). The next turn re-reads the conversation."""
        self.system = text or None
        self.history.forget()

    def clear(self) -> None:
        """Start a new conversation (same system prompt), forgetting its caches (the pair's, if they
        hold it, or what was set aside)."""
        self.turns = []
        self.first = 0
        self.history.forget()
        if self.pair.sessions.current in (self, None):
            self.pair.reset()  # the caches hold this conversation: empty them
        self.pair.sessions.forget(self)

    def send(self, text: str, cancel: threading.Event | None = None) -> Reply:
        """Start the reply to a new user message; old turns are dropped if the context needs room.

        ``cancel``, set from any thread, stops the reply, or the reading of its prompt (then this
        raises :class:`~edgespec.errors.Cancelled` and the turn is not recorded). Raises
        :class:`ContextOverflowError` when the message does not fit even alone.
        """
        prompt, dropped = self._fit(text)
        return self._start(text, prompt, dropped, cancel)

    def regen(self) -> Reply:
        """Redo the last reply: forget it and generate again for the same user message."""
        if len(self.turns) <= self.first:
            raise EdgespecError("there is no reply to redo yet")
        last = self.turns.pop()
        prompt = self.history.redo()
        try:
            if prompt is None:
                return self.send(last.user)
            return self._start(last.user, prompt, 0)
        except BaseException:
            self.turns.append(last)  # nothing new was generated: the old reply stands
            raise

    def _start(self, user: str, prompt: Tokens, dropped: int, cancel: threading.Event | None = None) -> Reply:
        gen = self.pair.stream(prompt.tokens, self.settings, session=self, cancel=cancel)
        log.info(
            "turn %d: prompt %d tokens, target prefilled %d",
            len(self.turns) + 1,
            gen.stats.prompt_tokens,
            gen.stats.prompt_prefilled,
        )
        return Reply(user, prompt, gen, dropped, self.settings.max_tokens, self.pair.draft_model, self._add)

    def _add(self, turn: Turn, prompt: Tokens, token_ids: list[int]) -> None:
        """Add a finished (or cut short) reply to the conversation."""
        self.turns.append(turn)
        self.totals.add_reply(turn.stats)
        self.history.record(prompt, token_ids, turn.reply)
        log.info(
            "turn %d: %s, draft caught up %d tokens",
            len(self.turns),
            turn.finish_reason,
            turn.draft_prefilled,
        )

    def _fit(self, user: str) -> tuple[Tokens, int]:
        """The prompt for a new user message, dropping the oldest turns until it fits."""
        n_ctx = self.pair.n_ctx
        room = min(self.settings.max_tokens, n_ctx // 4)
        dropped = 0
        while True:
            prompt = self.history.prompt([*self.messages, {"role": "user", "content": user}])
            if len(prompt.tokens) + room <= n_ctx or self.first >= len(self.turns):
                break
            self.first += 1
            dropped += 1
            self.history.forget()
        if len(prompt.tokens) >= n_ctx:
            raise ContextOverflowError(
                f"the message needs {len(prompt.tokens)} tokens with the system prompt, but the context "
                f"holds {n_ctx}; shorten it or raise --ctx-size"
            )
        if dropped:
            log.info("dropped %d oldest turns to fit the %d-token context", dropped, n_ctx)
        return prompt, dropped

    # ------------------------------------------------------------------ saving

    def to_dict(self) -> dict[str, Any]:
        """The whole conversation as JSON-ready data (dropped turns included)."""
        return chatfile.to_dict(self)

    def save(self, path: str | Path, state: bool = True) -> chatfile.Saved:
        """Write :meth:`to_dict` as JSON to ``path`` and, with ``state``, the caches beside it
        (``FILE.state``), so that :meth:`load` brings the chat back without reading it again."""
        return chatfile.save(self, path, state)

    @classmethod
    def load(cls, pair: Pair, path: str | Path, state: bool = True) -> Conversation:
        """The chat saved at ``path``, on ``pair``, with its caches when ``state`` and they are
        beside it; a state file that cannot be used raises :class:`~edgespec.errors.StateFileError`
        (load with ``state=False`` to read the chat again instead)."""
        return chatfile.load(cls, pair, path, state)
