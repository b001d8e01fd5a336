"""Progress of long work: loading (llama.cpp's progress callback), the device's measurement and exact
mode's self-check reach ``Pair(progress=...)``; Ctrl-C in the callback stops the loading; the CLI
draws bars on a terminal only."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from edgespec import Pair
from edgespec.cli.progress import ProgressBars
from edgespec.llama import Model


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGESPEC_CACHE_DIR", str(tmp_path / "cache"))  # measured, not read


def by_stage(calls: list[tuple[str, float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for stage, share in calls:
        out.setdefault(stage, []).append(share)
    return out


@pytest.mark.usefixtures("fresh_cache")
def test_loading_measuring_and_the_exact_check_report_their_progress(tiny: dict[str, Path]) -> None:
    calls: list[tuple[str, float]] = []
    with Pair(
        tiny["target"],
        tiny["draft-noisy"],
        n_ctx=1024,
        n_threads=1,
        exact=True,
        progress=lambda *c: calls.append(c),
    ) as pair:
        stages = list(by_stage(calls))
        assert stages == ["loading target", "loading draft", "checking exact mode"]  # in this order
        pair.costs()  # auto's planner: the device is measured
    shares = by_stage(calls)
    assert list(shares) == [*stages, "measuring this device"]
    for stage, seen in shares.items():
        assert seen == sorted(seen) and seen[-1] == 1.0, stage
    # Loading and measuring go by steps; the tiny float32 models differ at the first batch size
    # the exact check tries, which ends it.
    assert len(shares["loading target"]) > 2 and len(shares["measuring this device"]) > 2


def test_ctrl_c_while_loading_stops_it_and_is_raised(tiny: dict[str, Path]) -> None:
    seen: list[float] = []

    def progress(share: float) -> None:
        seen.append(share)
        if share > 0:
            raise KeyboardInterrupt  # what a Ctrl-C does in the main thread, inside llama.cpp's call

    with pytest.raises(KeyboardInterrupt):
        Model(tiny["target"], progress=progress)
    assert seen and seen[-1] < 1.0  # stopped before the end
    Model(tiny["target"]).close()  # and the next load is fine


def test_bars_are_drawn_on_a_terminal_and_removed_when_done() -> None:
    out = io.StringIO()
    bars = ProgressBars(Console(file=out, force_terminal=True, width=80))
    for share in (0.0, 0.5, 1.0):
        bars("loading target", share)
    text = out.getvalue()
    assert "loading target" in text and "100%" in text
    assert text.endswith("\x1b[2K")  # the bar's line erased once done
    piped = io.StringIO()
    quiet = ProgressBars(Console(file=piped, force_terminal=False))
    quiet("loading target", 0.5)
    quiet("loading target", 1.0)
    assert piped.getvalue() == ""


def test_generate_piped_shows_no_bar(tiny: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "EDGESPEC_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--target", str(tiny["target"]), "--threads", "1", "--prompt", "hi", "--max-tokens", "4"]
    done = subprocess.run(
        [sys.executable, "-m", "edgespec", "generate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0 and "loading" not in done.stderr and "%" not in done.stderr
