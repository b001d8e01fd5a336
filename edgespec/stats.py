"""What speculation did during one generation: counts by step, position and proposer, and timings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from edgespec.engine import Step
from edgespec.grammar import Grammar
from edgespec.options import DRAFT_LIMIT


@dataclass
class Stats:
    """What speculation did during one generation."""

    steps: int = 0
    """Target verifications (each yields at least one token)."""
    drafted: int = 0
    accepted: int = 0
    drafted_by_position: list[int] = field(default_factory=lambda: [0] * DRAFT_LIMIT)
    accepted_by_position: list[int] = field(default_factory=lambda: [0] * DRAFT_LIMIT)
    steps_by_source: dict[str, int] = field(default_factory=dict)
    """Steps served by each proposer (``none``, ``draft``, ``lookup``)."""
    drafted_by_source: dict[str, int] = field(default_factory=dict)
    accepted_by_source: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    prompt_prefilled: int = 0
    """Prompt tokens actually decoded; the rest came from the KV cache of an earlier turn."""
    prompt_seconds: float = 0.0
    ttft_seconds: float = 0.0
    """Time to first token: prefill plus the first verification step."""
    decode_seconds: float = 0.0
    n_tokens: int = 0
    mask_seconds: float = 0.0
    """Under a constraint: seconds spent masking the target's verified rows."""
    masked_rows: int = 0
    """Under a constraint: verified rows masked."""
    grammar_seconds: float = 0.0
    """Under a constraint: seconds spent following it and looking ahead for the proposers."""

    def add(self, step: Step) -> None:
        """Count one verification step."""
        source, n = step.proposal.source, len(step.proposal.tokens)
        self.steps += 1
        self.drafted += n
        self.accepted += step.n_accepted
        for i in range(n):
            self.drafted_by_position[i] += 1
            self.accepted_by_position[i] += i < step.n_accepted
        self.steps_by_source[source] = self.steps_by_source.get(source, 0) + 1
        self.drafted_by_source[source] = self.drafted_by_source.get(source, 0) + n
        self.accepted_by_source[source] = self.accepted_by_source.get(source, 0) + step.n_accepted

    def grammar(self, grammar: Grammar) -> None:
        """Take a constraint's costs (the grammar of this generation)."""
        self.mask_seconds = grammar.mask_seconds
        self.masked_rows = grammar.masked_rows
        self.grammar_seconds = grammar.other_seconds

    def merge(self, other: Stats) -> None:
        """Add another generation's counts and seconds to these (session totals)."""
        for f in fields(Stats):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, list):
                setattr(self, f.name, [a + b for a, b in zip(mine, theirs, strict=True)])
            elif isinstance(mine, dict):
                setattr(self, f.name, {k: mine.get(k, 0) + theirs.get(k, 0) for k in mine | theirs})
            else:
                setattr(self, f.name, mine + theirs)

    @property
    def acceptance(self) -> float:
        """Accepted guesses over drafted guesses (0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_per_step(self) -> float:
        """Accepted guesses per verification step."""
        return self.accepted / self.steps if self.steps else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens over decode seconds."""
        return self.n_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, with the derived figures, and position lists trimmed to where drafting reached."""
        d = asdict(self)
        reach = max((i + 1 for i, n in enumerate(self.drafted_by_position) if n), default=0)
        d["drafted_by_position"] = self.drafted_by_position[:reach]
        d["accepted_by_position"] = self.accepted_by_position[:reach]
        d["acceptance"] = round(self.acceptance, 4)
        d["mean_accepted_per_step"] = round(self.mean_accepted_per_step, 4)
        d["mean_draft_length"] = round(self.drafted / self.steps, 4) if self.steps else 0.0
        d["tokens_per_second"] = round(self.tokens_per_second, 3)
        return d
