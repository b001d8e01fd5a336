"""Proposers: prompt lookup finds the longest earlier match; the draft keeps its cache in step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgespec.compat import check_compatible, incompatibility
from edgespec.errors import IncompatibleModelsError
from edgespec.llama import Context, Model
from edgespec.lookup import PromptLookup
from edgespec.proposers import DraftModel
from edgespec.sampling import GREEDY

RNG = np.random.default_rng(0)


def test_lookup_prefers_the_longest_match_then_the_latest() -> None:
    lookup = PromptLookup(min_match=1)
    #          0  1  2  3  4  5  6  7  8  9 10 11
    history = [1, 2, 3, 9, 7, 2, 3, 8, 5, 1, 2, 3]
    # Suffix [1, 2, 3] matched at 0..2 (length 3) beats [2, 3] at 5..6 (length 2).
    assert lookup.find(history)[1:] == (3, 3)
    assert lookup.propose(history, 4, GREEDY, RNG).tokens == [9, 7, 2, 3]
    assert lookup.find([2, 3, 7, 2, 3, 8, 2, 3])[1:] == (5, 2)  # two equal matches: the latest
    assert lookup.find([1, 2, 3])[1:] == (0, 0)


def test_lookup_needs_min_match_and_caps_length() -> None:
    assert PromptLookup(min_match=2).find([5, 1, 6, 1])[1:] == (0, 0)
    history = list(range(50)) + list(range(50))
    _, start, length = PromptLookup(max_match=8).find(history)
    assert length == 8 and start == 50
    proposal = PromptLookup().propose(history[:60], 5, GREEDY, RNG)
    assert proposal.tokens == list(range(10, 15)) and proposal.match_len == 10
    assert proposal.match == [10, 11, 12, 13, 14]  # a copy's match grows along it


def naive_find(history: list[int], max_match: int) -> tuple[int, int]:
    best = (0, 0)
    for end in range(len(history) - 1):
        n = 0
        while n < min(end + 1, max_match) and history[end - n] == history[-1 - n]:
            n += 1
        if n and n >= best[1]:
            best = (end + 1, n)
    return best


def test_lookup_agrees_with_a_naive_search_on_random_texts() -> None:
    rng = np.random.default_rng(5)
    lookup = PromptLookup(min_match=1, max_match=12)
    for trial in range(300):
        text = rng.integers(0, 3 + trial % 5, size=int(rng.integers(2, 60))).tolist()
        assert lookup.find(text)[1:] == naive_find(text, 12), text


def test_lookup_follows_a_growing_history_and_a_new_one() -> None:
    lookup = PromptLookup()
    history = [4, 5, 6, 7, 8, 1, 4, 5]
    assert lookup.propose(history, 3, GREEDY, RNG).tokens == [6, 7, 8]
    history.extend([6, 9, 4, 5])  # grown in place, as the engine does: only the new tokens are read
    assert lookup.propose(history, 2, GREEDY, RNG).tokens == [6, 9]
    assert lookup.propose([3, 3, 9, 3, 3], 2, GREEDY, RNG).tokens == [9, 3]


def test_a_copy_reaching_the_end_repeats_itself() -> None:
    history = [9, 1, 2, 3, 1, 2, 3, 1, 2]
    assert PromptLookup().propose(history, 7, GREEDY, RNG).tokens == [3, 1, 2, 3, 1, 2, 3]
    assert PromptLookup().propose(history, 2, GREEDY, RNG, extra=[3, 1]).tokens == [2, 3]


def test_lookup_remembers_earlier_requests() -> None:
    lookup = PromptLookup(memory_tokens=40)
    earlier = list(range(100, 130))
    lookup.remember(earlier)
    proposal = lookup.propose([7, 8, 110, 111, 112], 4, GREEDY, RNG)
    assert proposal.tokens == [113, 114, 115, 116] and proposal.match_len == 3
    # The current text wins a tie; a copy from memory stops where the remembered sequence ends.
    assert lookup.propose([111, 112, 5, 111, 112], 2, GREEDY, RNG).tokens == [5, 111]
    assert lookup.propose([7, 128, 129], 4, GREEDY, RNG).tokens == []
    assert lookup.propose([7, 127, 128], 4, GREEDY, RNG).tokens == [129]
    # A chat turn continuing the last sequence replaces it; the oldest go when memory is full.
    lookup.remember([*earlier, 1, 2])
    assert len(lookup._remembered) == 1
    lookup.remember(list(range(200, 230)))
    assert lookup.propose([110, 111], 2, GREEDY, RNG).tokens == []
    assert lookup.propose([210, 211], 2, GREEDY, RNG).tokens == [212, 213]


def test_draft_cache_follows_history_and_rewinds(tiny: dict[str, Path]) -> None:
    model = Model(tiny["target"])
    draft = DraftModel(Context(model, n_ctx=256, n_batch=64, n_threads=1), model.n_vocab, p_min=0.0)
    history = model.tokenize("abcdef", add_special=True)
    guess = draft.propose(history, 4, GREEDY, RNG).tokens
    assert len(guess) == 4
    assert draft.cached == history + guess[:3]
    # The target kept two guesses and added its own token: only that difference is decoded.
    before = draft.n_prefilled
    draft.propose([*history, *guess[:2], 77], 2, GREEDY, RNG)
    assert draft.n_prefilled - before == 1
    assert draft.ctx.n_past == len(draft.cached)


def test_a_plan_decides_each_guess_as_it_comes(tiny: dict[str, Path]) -> None:
    model = Model(tiny["target"])
    draft = DraftModel(Context(model, n_ctx=256, n_batch=64, n_threads=1), model.n_vocab, p_min=0.0)
    history = model.tokenize("abcdef", add_special=True)
    seen: list[tuple[int, float]] = []

    def plan(i: int, top: float) -> int:
        seen.append((i, top))
        return 3  # three guesses, whatever the draft's confidence

    proposal = draft.propose(history, 8, GREEDY, RNG, plan)
    assert len(proposal.tokens) == 3 and [i for i, _ in seen] == [0, 1, 2]
    assert list(proposal.confidence) == [top for _, top in seen] and all(
        0 < c <= 1 for c in proposal.confidence
    )
    assert draft.cached == history + proposal.tokens[:2]  # the last guess is never decoded
    assert draft.propose(history, 8, GREEDY, RNG, lambda i, top: i).tokens == []


def test_low_confidence_stops_drafting(tiny: dict[str, Path]) -> None:
    model = Model(tiny["target"])
    ctx = Context(model, n_ctx=256, n_batch=64, n_threads=1)
    history = model.tokenize("abcdef", add_special=True)
    assert DraftModel(ctx, model.n_vocab, p_min=1.0).propose(history, 8, GREEDY, RNG).tokens == []


def test_compatibility_names_the_first_differing_token(tiny: dict[str, Path]) -> None:
    target = Model(tiny["target"])
    assert incompatibility(target, Model(tiny["draft-noisy"])) is None
    other = Model(tiny["draft-othervocab"])
    why = incompatibility(target, other)
    assert why is not None and "token 10" in why and "<0x07>" in why and "<|changed|>" in why
    try:
        check_compatible(target, other)
    except IncompatibleModelsError as exc:
        assert "cannot draft for" in str(exc)
    else:
        raise AssertionError("expected IncompatibleModelsError")
