"""Proposers: prompt lookup finds the longest earlier match; the draft keeps its cache in step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgespec.compat import check_compatible, incompatibility
from edgespec.errors import IncompatibleModelsError
from edgespec.llama import Context, Model
from edgespec.proposers import DraftModel, PromptLookup
from edgespec.sampling import GREEDY

RNG = np.random.default_rng(0)


def test_lookup_prefers_the_longest_match_then_the_latest() -> None:
    lookup = PromptLookup(min_match=1)
    #          0  1  2  3  4  5  6  7  8  9 10 11
    history = [1, 2, 3, 9, 7, 2, 3, 8, 5, 1, 2, 3]
    # Suffix [1, 2, 3] matched at 0..2 (length 3) beats [2, 3] at 5..6 (length 2).
    assert lookup.find(history) == (3, 3)
    assert lookup.propose(history, 4, GREEDY, RNG).tokens == [9, 7, 2, 3]
    assert lookup.find([2, 3, 7, 2, 3, 8, 2, 3]) == (5, 2)  # two equal matches: the latest
    assert lookup.find([1, 2, 3]) == (0, 0)


def test_lookup_needs_min_match_and_caps_length() -> None:
    assert PromptLookup(min_match=2).find([5, 1, 6, 1]) == (0, 0)
    history = list(range(50)) + list(range(50))
    start, length = PromptLookup(max_match=8).find(history)
    assert length == 8 and start == 50
    proposal = PromptLookup().propose(history[:60], 5, GREEDY, RNG)
    assert proposal.tokens == list(range(10, 15)) and proposal.match_len == 10


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
    assert draft.ctx.n_cached() == len(draft.cached)


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
