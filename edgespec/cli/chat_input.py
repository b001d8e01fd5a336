"""Chat input: one message at a time from a terminal (prompt_toolkit, with history and multi-line
editing) or from a pipe, with ``\"\"\"`` blocks for messages of several lines."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

from edgespec.paths import data_dir

PROMPT = ">>> "
CONTINUATION = "... "
BLOCK = '"""'


class Reader(Protocol):
    """Reads one message; raises EOFError at the end of input, KeyboardInterrupt on Ctrl-C."""

    def read(self) -> str:
        """The next message (a multi-line block comes back as one message)."""
        ...


def reader() -> Reader:
    """prompt_toolkit on a terminal; plain lines when stdin is a pipe or a file."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return TerminalReader(data_dir() / "chat_history")
    return PlainReader()


def is_open_block(text: str) -> bool:
    """Whether ``text`` opens a ``\"\"\"`` block that no line has closed yet."""
    lines = text.split("\n")
    return lines[0].strip() == BLOCK and not (len(lines) > 1 and lines[-1].strip() == BLOCK)


def unwrap_block(text: str) -> str:
    """The message inside a ``\"\"\"`` block (the text itself when it is not one)."""
    lines = text.split("\n")
    if lines[0].strip() != BLOCK:
        return text
    body = lines[1:-1] if len(lines) > 1 and lines[-1].strip() == BLOCK else lines[1:]
    return "\n".join(body)


class TerminalReader:
    """prompt_toolkit input with history across sessions and multi-line editing."""

    def __init__(self, history_path: Path) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.application import get_app
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.history import FileHistory, History, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

        history: History
        try:
            history_path.parent.mkdir(parents=True, exist_ok=True)
            history_path.touch()
            history = FileHistory(str(history_path))
        except OSError:
            history = InMemoryHistory()
        bindings = KeyBindings()
        in_block = Condition(lambda: is_open_block(get_app().current_buffer.text))

        @bindings.add("escape", "enter")
        @bindings.add("enter", filter=in_block)
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        self._session: PromptSession[str] = PromptSession(
            history=history,
            key_bindings=bindings,
            prompt_continuation=lambda width, line, soft: CONTINUATION,
            multiline=False,
        )

    def read(self) -> str:
        """One message, ``\"\"\"`` markers removed."""
        return unwrap_block(self._session.prompt(PROMPT))


class PlainReader:
    """Lines from stdin, for pipes and scripts; ``\"\"\"`` blocks work the same."""

    def read(self) -> str:
        """One message; EOFError at the end of input."""
        text = self._line()
        while is_open_block(text):
            text += "\n" + self._line()
        return unwrap_block(text)

    @staticmethod
    def _line() -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")
