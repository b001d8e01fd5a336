"""The example desktop app (examples/chat_app.py) in a real window under Xvfb, driven by real X events
(xdotool): a message typed, Stop pressed mid-reply, a second conversation, the first brought back
without reading it again. A screenshot is saved to test-artifacts/ (or $EDGESPEC_TEST_ARTIFACTS).

Needs Xvfb, xdotool and tkinter: ``.ci/run`` installs the first two where missing."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgespec import GenerationOptions, Pair

ROOT = Path(__file__).resolve().parent.parent
MISSING = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
try:
    import tkinter as tk
except ImportError:  # a Python built without Tk
    MISSING.append("tkinter")

pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"no display stack here: {', '.join(MISSING)} missing")


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A virtual X display of its own."""
    for n in range(91, 120):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    server = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{n}").exists():
            assert server.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.05)
        yield f":{n}"
    finally:
        server.terminate()
        server.wait(10)


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chat_app", ROOT / "examples" / "chat_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["chat_app"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Driver:
    """Real input to the window through the X server, and the Tk loop pumped meanwhile."""

    def __init__(self, root: tk.Tk, display: str) -> None:
        self.root, self.env = root, {**os.environ, "DISPLAY": display}

    def xdotool(self, *args: object) -> None:
        subprocess.run(["xdotool", *map(str, args)], env=self.env, check=True, timeout=30)
        self.root.update()

    def click(self, widget: Any, dx: int | None = None, dy: int | None = None) -> None:
        x = widget.winfo_rootx() + (widget.winfo_width() // 2 if dx is None else dx)
        y = widget.winfo_rooty() + (widget.winfo_height() // 2 if dy is None else dy)
        self.xdotool("mousemove", "--sync", x, y, "click", 1)

    def type(self, widget: Any, text: str) -> None:
        self.click(widget)  # the pointer's window has the keyboard (no window manager)
        self.xdotool("type", "--delay", 10, text)
        self.xdotool("key", "Return")

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.root.update()
            time.sleep(0.01)


def test_the_example_app_streams_stops_and_switches_conversations(
    tiny: dict[str, Path], display: str
) -> None:
    app_module = example()
    settings = GenerationOptions(temperature=0, max_tokens=300, strategy="draft")
    with Pair(tiny["target"], tiny["draft-same"], n_ctx=1024, n_threads=1) as pair:
        root = tk.Tk(screenName=display)
        try:
            app = app_module.ChatApp(root, pair, settings, token_delay=0.03)
            ui = Driver(root, display)
            ui.wait(lambda: bool(root.winfo_viewable()), "the window")
            window = lambda: app.text.get("1.0", "end")  # noqa: E731

            ui.type(app.entry, "a")  # the tiny model's long reply
            ui.wait(lambda: len(window().split("Model: ", 1)[-1]) > 12, "the reply to stream")
            ui.click(app.stop_button)
            ui.wait(lambda: app.cancel is None, "the reply to stop")
            first = app.chats[0].conversation.turns[0]
            assert first.finish_reason == "interrupted" and first.stats.n_tokens < 100
            assert f"You: a\nModel: {first.reply} (stopped)" in window()
            assert app.text.tag_ranges("guess")  # the draft's kept guesses are tinted

            ui.click(app.new_button)
            ui.type(app.entry, "hello world")
            ui.wait(lambda: app.cancel is None and "Model: " in window(), "the second conversation's reply")
            assert "You: hello world" in window() and "You: a" not in window()
            assert app.listbox.get(0, "end") == ("Conversation 1", "Conversation 2")

            row = app.listbox.bbox(0)
            ui.click(app.listbox, row[0] + 5, row[1] + row[3] // 2)
            ui.wait(lambda: app.current is app.chats[0], "the switch back")
            assert f"Model: {first.reply} (stopped)" in window() and "hello world" not in window()
            ui.type(app.entry, "go on")
            ui.wait(lambda: app.cancel is None and "You: go on" in window(), "the reply in the first one")
            read, of = map(int, re.search(r"read (\d+) of (\d+)", app.status.cget("text")).groups())  # type: ignore[union-attr]
            assert read < 40 < of  # its caches came back: only the new message was read
            screenshot(display)
        finally:
            root.destroy()


def screenshot(display: str) -> None:
    """The screen as a PNG, kept for whoever looks at the test run."""
    from PIL import ImageGrab

    out = Path(os.environ.get("EDGESPEC_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    ImageGrab.grab(xdisplay=display).save(out / "chat_app.png")
