"""Strategy names to planners, for one pair's proposers.

``none``, ``lookup``, ``draft`` and ``mtp`` get a :class:`~edgespec.planner.FixedPlanner` per generation;
``auto`` gets one :class:`~edgespec.planner.AutoPlanner` for the pair's life, built on first use
(from the device's measured costs), because it keeps learning from every generation.
"""

from __future__ import annotations

from collections.abc import Callable

from edgespec.engine import Planner
from edgespec.errors import InvalidParameterError
from edgespec.lookup import PromptLookup
from edgespec.mtp import MtpDraft
from edgespec.options import check
from edgespec.planner import AutoPlanner, FixedPlanner
from edgespec.proposers import DraftModel


class Planners:
    """The planner behind each strategy name.

    Args:
        lookup: the pair's prompt lookup.
        draft: the pair's draft model, or None.
        build_auto: builds ``auto``'s planner; ``build_auto(refresh)`` measures the device's
            costs afresh when ``refresh`` is true (else they may come from the cache on disk).
        mtp: the target's MTP layers (or Gemma 4's assistant) as a drafter, or None.
        no_mtp: why there is none (said when ``mtp`` is asked for).
        no_draft: why there is no draft model (said when ``draft`` is asked for).
    """

    def __init__(
        self,
        lookup: PromptLookup,
        draft: DraftModel | None,
        build_auto: Callable[[bool], AutoPlanner],
        mtp: MtpDraft | None = None,
        no_mtp: str = "the target has none",
        no_draft: str = "this pair has none",
    ) -> None:
        self.lookup = lookup
        self.draft = draft
        self.mtp = mtp
        self.no_mtp = no_mtp
        self.no_draft = no_draft
        self._build_auto = build_auto
        self._auto: AutoPlanner | None = None

    def check(self, strategy: str) -> None:
        """Raise :class:`InvalidParameterError` unless these proposers can run ``strategy``."""
        check("strategy", strategy)
        if strategy == "draft" and self.draft is None:
            raise InvalidParameterError(f"strategy 'draft' needs a draft model (--draft); {self.no_draft}")
        if strategy == "mtp" and self.mtp is None:
            raise InvalidParameterError(
                "strategy 'mtp' needs a target with MTP layers, or Gemma 4's assistant as its draft: "
                + self.no_mtp
            )

    def auto(self, refresh: bool = False) -> AutoPlanner:
        """``auto``'s planner: built once, or again from a fresh measurement with ``refresh``."""
        if self._auto is None or refresh:
            self._auto = self._build_auto(refresh)
        return self._auto

    def get(self, strategy: str, k: int) -> Planner:
        """The planner for ``strategy``; a fixed strategy guesses ``k`` tokens a step."""
        self.check(strategy)
        if strategy == "none":
            return FixedPlanner(None, 0)
        if strategy == "lookup":
            return FixedPlanner(self.lookup, k)
        if strategy == "draft":
            return FixedPlanner(self.draft, k)
        if strategy == "mtp":
            return FixedPlanner(self.mtp, k)
        if strategy == "auto":
            return self.auto()
        raise AssertionError(strategy)  # check knows every strategy
