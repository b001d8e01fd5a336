"""Saved chats: a conversation as JSON (chat's ``/save``), its caches beside it in ``FILE.state``,
and both read back (``/load``) so that the next turn reads only what is new.

The state file is checked whole before it is used (:mod:`edgespec.statefile`: the models, the cache
settings, the checksums), and against the chat it sits beside: the chat's messages must render to
the text the cached tokens stand for, and the caches must hold those tokens. A chat edited since,
or a state from another pair, is refused with one line; the chat itself still loads, to be read again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgespec import statefile
from edgespec.errors import EdgespecError, StateFileError
from edgespec.generate import Pair
from edgespec.options import FLAGS, GenerationOptions
from edgespec.turns import Tokens, Turn

if TYPE_CHECKING:
    from edgespec.conversation import Conversation

C = TypeVar("C", bound="Conversation")


def state_path(path: Path) -> Path:
    """Where the caches of the chat saved at ``path`` go: ``FILE.state`` beside it."""
    return path.with_name(path.name + ".state")


@dataclass(frozen=True)
class Saved:
    """What :func:`save` wrote."""

    path: Path
    state_path: Path | None
    """None when there was no state to save (nothing generated yet, or it was not kept)."""
    state_bytes: int


def to_dict(conv: Conversation) -> dict[str, Any]:
    """The whole conversation as JSON-ready data (dropped turns included)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": conv.system}] if conv.system else []
    for turn in conv.turns:
        messages += [
            {"role": "user", "content": turn.user},
            {"role": "assistant", "content": turn.reply, "finish_reason": turn.finish_reason},
        ]
    draft = conv.pair.draft
    return {
        "target": str(conv.pair.target.path),
        "draft": str(draft.path) if draft is not None else None,
        "n_ctx": conv.pair.n_ctx,
        "settings": conv.settings.flags(),
        "messages": messages,
        "turns_dropped_from_context": conv.first,
        "turns": [turn.to_dict() for turn in conv.turns],
    }


def save(conv: Conversation, path: str | Path, state: bool = True) -> Saved:
    """Write the conversation as JSON to ``path`` and, with ``state``, its caches to
    :func:`state_path` (a state file left there by an earlier save is removed otherwise)."""
    out = Path(path).expanduser()
    try:
        out.write_text(json.dumps(to_dict(conv), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise EdgespecError(f"cannot write {out}: {exc.strerror or exc}") from exc
    beside = state_path(out)
    saved = conv.pair.sessions.state_of(conv) if state else None
    last, prompt = conv.history.last, conv.history.last_prompt
    if (
        saved is None
        or saved.target is None
        or last is None
        or saved.history[: len(last.tokens)] != last.tokens
    ):
        beside.unlink(missing_ok=True)  # it would describe an older state of this chat
        return Saved(out, None, 0)
    extra = {
        "text": last.text,
        "tokens": last.tokens,
        "prompt_text": prompt.text if prompt else None,
        "n_prompt": len(prompt.tokens) if prompt else 0,
    }
    pair = conv.pair
    ident = statefile.identity(pair.target_ctx, pair.draft_model.ctx if pair.draft_model else None)
    return Saved(out, beside, statefile.write(beside, saved, ident, extra))


def load(cls: type[C], pair: Pair, path: str | Path, state: bool = True) -> C:
    """The conversation saved at ``path`` on ``pair``, and with ``state`` its caches from
    :func:`state_path` if there (kept in the pair's sessions, loaded at its next turn). A state
    that cannot be used raises :class:`~edgespec.errors.StateFileError`; call again with
    ``state=False`` to load the chat alone."""
    src = Path(path).expanduser()
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
        messages, turns = data["messages"], data["turns"]
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        settings = GenerationOptions().replace(**{FLAGS[k]: v for k, v in data["settings"].items()})
        conv = cls(pair, system=system, settings=settings)
        conv.turns = [Turn.from_dict(t) for t in turns]
        conv.first = int(data.get("turns_dropped_from_context", 0))
    except OSError as exc:
        raise EdgespecError(f"cannot read {src}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError, IndexError, EdgespecError) as exc:
        raise EdgespecError(f"{src}: not a chat saved by edgespec ({exc})") from exc
    for turn in conv.turns:
        conv.totals.add_reply(turn.stats)
    beside = state_path(src)
    if state and beside.exists():
        _load_state(conv, beside)
    return conv


def _load_state(conv: Conversation, path: Path) -> None:
    pair = conv.pair
    ident = statefile.identity(pair.target_ctx, pair.draft_model.ctx if pair.draft_model else None)
    n_embd = pair.mtp_draft.hidden.n_embd if pair.mtp_draft else 0
    saved, extra = statefile.read(path, ident, pair.target.n_vocab, pair.n_ctx, n_embd)
    text, tokens = extra.get("text"), extra.get("tokens")
    probe = pair.prompter.render([*conv.messages, {"role": "user", "content": "?"}], conv.history.template)
    if not isinstance(text, str) or not isinstance(tokens, list) or not probe.startswith(text):
        raise StateFileError(f"{path}: does not match the chat beside it (edited since it was saved?)")
    if saved.history[: len(tokens)] != tokens:
        raise StateFileError(f"{path}: its caches do not hold the chat's tokens")
    conv.history.last = Tokens(text, tokens)
    if isinstance(extra.get("prompt_text"), str):
        conv.history.last_prompt = Tokens(extra["prompt_text"], tokens[: int(extra["n_prompt"])])
    pair.sessions.put(conv, saved)
