"""The planner-trace tool's oracle: what it counts as reachable decides what the README calls the ceiling."""

from __future__ import annotations

from conftest import _script

from edgespec.costs import CostModel

FLAT = CostModel({1: 1.0, 64: 1.0}, 0.0)  # any batch costs one step; drafting is free
OUT = [10, 11, 12, 13, 14, 15]


def _trace(second_at_miss: int) -> dict:
    # The draft guesses the output except at position 2, where its second choice is given.
    return {
        "prompt": [1, 2, 3],
        "output": OUT,
        "guess": [10, 11, 99, 13, 14, 15],
        "second": [0, 0, second_at_miss, 0, 0, 0],
    }


def test_a_chain_stops_where_the_draft_is_first_wrong() -> None:
    oracle = _script("planner_trace")._oracle_seconds
    # 10, 11 kept and the target's 12; then 13, 14 kept and the target's 15: two steps.
    assert oracle(_trace(12), FLAT, 0.0, trees=False) == 2.0


def test_a_second_branch_counts_only_where_the_second_choice_is_right() -> None:
    oracle = _script("planner_trace")._oracle_seconds
    # The branch at position 2 (12, then the draft's 13, 14) and the target's 15: one step.
    assert oracle(_trace(12), FLAT, 0.0, trees=True) == 1.0
    assert oracle(_trace(98), FLAT, 0.0, trees=True) == 2.0
    # A branch of the second choice alone: 10, 11, 12 and the target's 13; then 14 and 15.
    assert oracle(_trace(12), FLAT, 0.0, trees=True, branch_max=0) == 2.0


def test_a_branch_costs_its_rows_on_the_curve() -> None:
    oracle = _script("planner_trace")._oracle_seconds
    linear = CostModel({1: 1.0, 64: 64.0}, 0.0)  # compute-bound: every row costs a step
    # Verifying the wrong guess and the branch costs more rows than the chain saves.
    assert oracle(_trace(12), linear, 0.0, trees=True) == oracle(_trace(12), linear, 0.0, trees=False)
