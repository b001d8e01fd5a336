"""Which proposer, and how many tokens, each step: the device's costs times what is accepted now.

On a compute-bound CPU the target verifies n tokens for nearly n single steps, so a guess only
pays when it is cheap and likely kept; on a GPU verification is nearly flat in n and a draft model
pays. The device's costs come from :mod:`edgespec.costs`, how often a guess is kept from
:mod:`edgespec.calibration`; :class:`AutoPlanner` picks, each step, the option that adds tokens
fastest against the rate generation already reaches (drafting nothing when nothing pays), and
decides each drafted guess as it comes (:class:`~edgespec.plans.DraftPlan`), joins a copy and a
drafter in one batch where that pays (:mod:`edgespec.joins`) and now and then tries an option
its estimates rule out (:mod:`edgespec.explore`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgespec.calibration import copy_calibration, expected_tokens
from edgespec.costs import CostModel
from edgespec.explore import EXPLORE_K, Explorer
from edgespec.forcing import forced_lead
from edgespec.joins import Joins
from edgespec.lookup import PromptLookup
from edgespec.plans import Drafter, Option, Weighing, copied, join
from edgespec.proposers import NO_PROPOSAL, DraftProposer, Proposal
from edgespec.sampling import SamplingParams

RATE_WEIGHT = 0.05  # how fast the planner's rate follows each step (about the last 20 steps)
NEW_TEXT_FADE = 0.25  # what a new generation keeps of the evidence on copies (other text, other copies)


class FixedPlanner:
    """Always the same proposer and the same maximum length: the ``none``/``draft``/``lookup`` strategies."""

    def __init__(self, proposer: DraftProposer | PromptLookup | None, k: int) -> None:
        self.proposer = proposer
        self.k = k

    def begin(self) -> None:
        """Nothing to prepare."""

    def propose(
        self,
        history: Sequence[int],
        max_k: int,
        params: SamplingParams,
        rng: np.random.Generator,
        n_pending: int = 1,
    ) -> Proposal:
        """The proposer's guess, capped at ``k``; none while more tokens are pending than ``k``
        (a recurrent target cut back to a checkpoint), so that they never pile up."""
        k = min(self.k, max_k)
        if self.proposer is None or k <= 0 or n_pending > self.k:
            return NO_PROPOSAL
        return self.proposer.propose(history, k, params, rng)

    def observe(self, proposal: Proposal, n_accepted: int, propose_s: float, verify_s: float) -> None:
        """Fixed plans learn nothing."""


class AutoPlanner:
    """Each step, the option worth most at the rate generation is reaching, measured costs times
    learned acceptance: no guess, a lookup copy of any length it supports, a drafter (the draft
    model, the target's MTP layers; its guesses decided one by one as they are drafted), or a copy
    and a drafter joined in one batch.

    An option's worth is its expected tokens minus ``rate`` times its expected seconds, where
    ``rate`` is the tokens per second generation has reached lately. Maximising that each step is
    Dinkelbach's method for the best long-run tokens per second: a guess is taken when it adds
    tokens faster than generation runs anyway, and the rate it reaches is fed back. Every drafter
    is weighed by that rule on its own measured costs and keep rates; one without a measured cost
    is left out.
    """

    def __init__(
        self,
        costs: CostModel,
        lookup: PromptLookup | None,
        drafters: Sequence[DraftProposer] = (),
        max_draft: int = 16,
    ) -> None:
        self.costs = costs
        self.lookup = lookup
        self.drafters = [Drafter(d, *cost) for d in drafters if (cost := costs.drafting(d.name)) is not None]
        """Each drafter with its costs and its own calibration."""
        self.max_draft = max_draft
        self.copies = copy_calibration()
        # Recent tokens and seconds per step (moving averages); they start at the target alone.
        self._tokens = 1.0
        self._seconds = costs.verify(1)
        self._rate = self.rate
        """The rate this step is weighed at."""
        self._first_step = True
        self._n_pending = 1  # in the batch being verified
        self.joins = Joins(lookup, self.copies)
        self.explorer = Explorer(self.drafters, self.copies)

    @property
    def rate(self) -> float:
        """Tokens per second reached lately."""
        return self._tokens / self._seconds

    @rate.setter
    def rate(self, value: float) -> None:
        self._tokens = value * self._seconds

    def begin(self) -> None:
        """A new generation: its first token comes from the target alone, so that time to first
        token is the target's. How copies fared in the last text says little about this one."""
        self._first_step = True
        self.copies.age(NEW_TEXT_FADE)

    def propose(
        self,
        history: Sequence[int],
        max_k: int,
        params: SamplingParams,
        rng: np.random.Generator,
        n_pending: int = 1,
    ) -> Proposal:
        """Weigh the options and return the best one's proposal. Under a constraint, the tokens
        it forces come first (where their rows pay), and the options are weighed after them."""
        self._n_pending = n_pending
        if self._first_step or max_k <= 0:
            self._first_step = False
            return NO_PROPOSAL
        curve = self.costs.curve(max_k + n_pending - 1)[n_pending - 1 :]
        forced = forced_lead(history, max_k, curve, max(self.rate, 1.0 / float(curve[0])), params)
        n = len(forced.tokens)
        if n == 0:
            return self._choose(history, max_k, params, rng, n_pending, len(history))
        if n == max_k:
            return forced
        # Forced tokens are as sure as pending ones: what follows is weighed as if they were.
        after = [*history, *forced.tokens]
        return join(forced, self._choose(after, max_k - n, params, rng, n_pending + n, len(history)))

    def _choose(
        self,
        history: Sequence[int],
        max_k: int,
        params: SamplingParams,
        rng: np.random.Generator,
        n_pending: int,
        verified: int,
    ) -> Proposal:
        # The batch starts with the pending tokens: j guesses cost a batch of n_pending + j.
        # Past ``verified`` the history holds forced tokens: only a drafter that can read
        # unverified text may draft on from them.
        usable = [d for d in self.drafters if verified == len(history) or d.proposer.continues_copies]
        curve = self.costs.curve(max_k + n_pending - 1)[n_pending - 1 :]
        candidates = [("none", np.ones(1), curve[:1])]  # (source, expected tokens, seconds) by length
        copy = NO_PROPOSAL
        if self.lookup is not None:
            copy = self.lookup.propose(history, max_k, params, rng)
            if copy.tokens:
                tokens = expected_tokens(self.copies.rates(copy.match))
                candidates.append(("lookup", tokens, curve[: tokens.size]))
        draft_k = min(max_k, self.max_draft)
        if draft_k > 0:
            for d in usable:
                tokens = expected_tokens(np.full(draft_k, d.pooled()))
                candidates.append((d.name, tokens, curve[: draft_k + 1] + d.seconds(history, draft_k)))
        # The rate weighed against is what generation reaches, but never more than the best option
        # here promises: a rate no option can reach would make every guess look like a loss.
        # Nor less than the target alone reaches, which drafting nothing always does.
        best_rate = max(float(np.max(t / c)) for _, t, c in candidates)
        self._rate = min(max(self.rate, 1.0 / float(curve[0])), best_rate)
        options = [Option.best(*candidate, self._rate) for candidate in candidates]
        best = max(options, key=lambda o: o.value if o.k or o.source == "none" else -np.inf)
        w = Weighing(curve, self._rate, max_k, params, rng)
        # No try after forced tokens where one of the explorer's drafters cannot read them.
        explore = verified == len(history) or all(d.proposer.continues_copies for d in self.drafters)
        explored = self.explorer.choose(history, best, copy, w, min(draft_k, EXPLORE_K)) if explore else None
        if explored is not None:
            return explored
        drafters = {d.name: d for d in usable}
        if best.source == "lookup":
            # The copy goes on, where it turns doubtful, with the drafter worth most this step of
            # those that can draft on from unverified text.
            worth = {o.source: o.value for o in options}
            joinable = [d for d in usable if d.proposer.continues_copies]
            drafter = max(joinable, key=lambda d: worth.get(d.name, -np.inf), default=None)
            return self.joins.continue_with_draft(history, copied(copy, best.k), w, self.max_draft, drafter)
        if best.source in drafters:
            plan = drafters[best.source].plan(curve, self._rate)
            drafted = drafters[best.source].proposer.propose(history, draft_k, params, rng, plan, verified)
            return self.joins.extend_by_copy(history, drafted, plan.survival, w)
        return NO_PROPOSAL

    def observe(self, proposal: Proposal, n_accepted: int, propose_s: float, verify_s: float) -> None:
        """Learn acceptance and costs from the step just verified."""
        n = len(proposal.tokens)
        self.costs.observe(n + self._n_pending, verify_s)
        self._tokens += RATE_WEIGHT * (n_accepted + 1 - self._tokens)
        self._seconds += RATE_WEIGHT * (propose_s + verify_s - self._seconds)
        for d in self.drafters:
            d.confidence.age()
        self.copies.age()
        judged = range(min(n_accepted + 1, n))
        drafted = [i for i in judged if not proposal.match[i] and not proposal.is_forced(i)]
        copies = [i for i in judged if proposal.match[i]]
        # A proposal holds one drafter's guesses at most; its source names it.
        drafter = next((d for d in self.drafters if d.name in proposal.source.split("+")), None)
        if drafted and drafter is not None:
            drafter.confidence.observe(
                [proposal.confidence[i] for i in drafted], [i < n_accepted for i in drafted]
            )
        if copies:
            self.copies.observe([proposal.match[i] for i in copies], [i < n_accepted for i in copies])
