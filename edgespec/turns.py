"""What a conversation is made of, as data: its turns, their totals, and tokens with their text."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from edgespec.stats import Stats


@dataclass
class Turn:
    """One exchange: the user's message and the reply (partial when interrupted)."""

    user: str
    reply: str
    finish_reason: str
    """``"stop"``, ``"length"`` or ``"interrupted"``."""
    strategy: str
    stats: Stats
    draft_prefilled: int = 0
    """Tokens the draft model decoded to catch up (the new prompt, and accepted tokens it had not
    drafted itself); 0 when the draft was not used."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "user": self.user,
            "reply": self.reply,
            "finish_reason": self.finish_reason,
            "strategy": self.strategy,
            "stats": self.stats.to_dict(),
            "draft_prefilled": self.draft_prefilled,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        """What :meth:`to_dict` wrote (a saved chat); KeyError or TypeError if it is not that."""
        known = {f.name for f in fields(Stats)}
        stats = Stats(**{k: v for k, v in d["stats"].items() if k in known})
        for name in ("drafted_by_position", "accepted_by_position"):  # saved trimmed
            row = list(getattr(stats, name))
            setattr(stats, name, row + [0] * (len(Stats().drafted_by_position) - len(row)))
        return cls(d["user"], d["reply"], d["finish_reason"], d["strategy"], stats, int(d["draft_prefilled"]))


@dataclass
class Totals(Stats):
    """A session's figures, summed over its replies (``/stats``)."""

    replies: int = 0

    def add_reply(self, stats: Stats) -> None:
        """Count one reply."""
        self.replies += 1
        self.merge(stats)


@dataclass(frozen=True)
class Tokens:
    """Token ids and the template text they stand for."""

    text: str
    tokens: list[int]
