"""The server soak (scripts/soak_server.py) in short: 40 requests against `edgespec serve` with the
real pair, mixed streamed and plain, some dropped, malformed or longer than the context.

It checks what the full run checks, never timings: no 5xx but a queue-full 503 with Retry-After, every
well-formed request answered, the server's memory steady, /health ok at the end, and every dropped
stream's generation stopped within one step of the server noticing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.real
def test_short_soak(real_paths: dict[str, Path]) -> None:
    spec = importlib.util.spec_from_file_location("soak_server", ROOT / "scripts" / "soak_server.py")
    assert spec and spec.loader
    soak = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = soak  # its dataclasses look themselves up there
    spec.loader.exec_module(soak)

    # One thread: properties, not speed, are checked, and it holds up best on a shared machine.
    report = soak.soak(real_paths["target"], real_paths["draft"], n=40, clients=8, threads=1)
    assert not report.failures, "\n".join(report.failures + report.lines)
    kinds = {o.request.kind for o in report.outcomes}
    assert kinds == {"plain", "stream", "drop", "malformed", "overlong"}
    assert sum(o.status == 200 for o in report.outcomes) >= 20  # most were generated, not refused
    cancelled = [line for line in report.log if "cancelled after" in line]
    assert cancelled, "no dropped stream was still generating when its client left"
