"""A small desktop chat window on edgespec's Python API, with the standard library's tkinter only.

    python examples/chat_app.py --target TARGET.gguf --draft DRAFT.gguf

Replies stream as they are generated, the tokens the target accepted from guesses tinted. Stop
ends a reply at once, even while a long message is still being read. The conversations listed on
the left share one loaded pair: switching between them brings each one's caches back from memory
instead of reading it again (the stats line's ``read`` says how many prompt tokens were decoded).

How it uses the API: each reply runs on a worker thread (``Conversation.send`` with a cancel event
that the Stop button sets), its events go through a queue, and the Tk loop polls the queue.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
import tkinter as tk
from dataclasses import dataclass, field
from tkinter import ttk

from edgespec import GenerationOptions, Pair
from edgespec.conversation import Conversation, Reply, Turn
from edgespec.errors import Cancelled, EdgespecError

GUESS_TINT = "#d9f2d9"
"""Background of the tokens that came from accepted guesses."""
POLL_MS = 15


@dataclass
class Chat:
    """One conversation and what its transcript shows: (text, tag) pieces."""

    conversation: Conversation
    title: str
    pieces: list[tuple[str, str]] = field(default_factory=list)


def stats_line(turn: Turn) -> str:
    """What speculation did for one reply."""
    s = turn.stats
    return (
        f"{s.n_tokens} tokens · {s.tokens_per_second:.1f} tok/s · {turn.strategy} · "
        f"guesses kept {s.accepted}/{s.drafted} · "
        f"read {s.prompt_prefilled} of {s.prompt_tokens} prompt tokens ({s.prompt_seconds * 1000:.0f} ms)"
    )


class ChatApp:
    """The window: conversations on the left, the transcript, a message line, Send and Stop.

    Args:
        root: the Tk root window.
        pair: the loaded models, shared by every conversation.
        settings: generation options for every conversation.
        token_delay: seconds to wait after each token (demos and tests: time to press Stop).
    """

    def __init__(
        self, root: tk.Tk, pair: Pair, settings: GenerationOptions, token_delay: float = 0.0
    ) -> None:
        self.root, self.pair, self.settings, self.token_delay = root, pair, settings, token_delay
        self.chats: list[Chat] = []
        self.current: Chat | None = None
        self.cancel: threading.Event | None = None  # the reply in progress, if any
        self.inbox: queue.Queue[tuple[str, object]] = queue.Queue()
        root.title("edgespec chat")
        self._build()
        self.new_chat()
        root.after(POLL_MS, self._poll)

    def _build(self) -> None:
        side = ttk.Frame(self.root, padding=4)
        side.pack(side=tk.LEFT, fill=tk.Y)
        self.listbox = tk.Listbox(side, width=22, exportselection=False)
        self.listbox.pack(fill=tk.Y, expand=True)
        self.listbox.bind("<<ListboxSelect>>", lambda _: self._selected())
        self.new_button = ttk.Button(side, text="New conversation", command=self.new_chat)
        self.new_button.pack(fill=tk.X)
        main = ttk.Frame(self.root, padding=4)
        main.pack(side=tk.LEFT, fill=tk.BOTH, expand=True)
        self.text = tk.Text(main, wrap=tk.WORD, width=80, height=24, state=tk.DISABLED)
        self.text.pack(fill=tk.BOTH, expand=True)
        self.text.tag_configure("guess", background=GUESS_TINT)
        self.text.tag_configure("user", font=("TkDefaultFont", 10, "bold"))
        self.text.tag_configure("note", foreground="gray40")
        row = ttk.Frame(main)
        row.pack(fill=tk.X, pady=(4, 0))
        self.entry = ttk.Entry(row)
        self.entry.pack(side=tk.LEFT, fill=tk.X, expand=True)
        self.entry.bind("<Return>", lambda _: self.send())
        self.send_button = ttk.Button(row, text="Send", command=self.send)
        self.send_button.pack(side=tk.LEFT)
        self.stop_button = ttk.Button(row, text="Stop", command=self.stop, state=tk.DISABLED)
        self.stop_button.pack(side=tk.LEFT)
        self.status = ttk.Label(main, text="ready", anchor=tk.W)
        self.status.pack(fill=tk.X)
        self.entry.focus_set()

    # ------------------------------------------------------------------ conversations

    def new_chat(self) -> None:
        """Start a conversation and show it."""
        chat = Chat(Conversation(self.pair, settings=self.settings), f"Conversation {len(self.chats) + 1}")
        self.chats.append(chat)
        self.listbox.insert(tk.END, chat.title)
        self._show(len(self.chats) - 1)

    def _selected(self) -> None:
        chosen = self.listbox.curselection()
        if chosen and self.cancel is None:
            self._show(chosen[0])
        elif self.current is not None:  # a reply is streaming: stay where it is shown
            self.listbox.selection_clear(0, tk.END)
            self.listbox.selection_set(self.chats.index(self.current))

    def _show(self, index: int) -> None:
        self.current = self.chats[index]
        self.listbox.selection_clear(0, tk.END)
        self.listbox.selection_set(index)
        self.text.configure(state=tk.NORMAL)
        self.text.delete("1.0", tk.END)
        for text, tag in self.current.pieces:
            self.text.insert(tk.END, text, tag)
        self.text.configure(state=tk.DISABLED)
        self.text.see(tk.END)

    def _add(self, text: str, tag: str = "") -> None:
        assert self.current is not None
        self.current.pieces.append((text, tag))
        self.text.configure(state=tk.NORMAL)
        self.text.insert(tk.END, text, tag)
        self.text.configure(state=tk.DISABLED)
        self.text.see(tk.END)

    # ------------------------------------------------------------------ replies

    def send(self) -> None:
        """Send the message line to the current conversation; its reply streams in."""
        message = self.entry.get().strip()
        if not message or self.cancel is not None or self.current is None:
            return
        self.entry.delete(0, tk.END)
        self._add(f"You: {message}\n", "user")
        self.cancel = threading.Event()
        self._busy(True)
        args = (self.current.conversation, message, self.cancel, self.inbox, self.token_delay)
        threading.Thread(target=_reply, args=args, daemon=True).start()

    def stop(self) -> None:
        """Stop the reply in progress (or the reading of its prompt)."""
        if self.cancel is not None:
            self.cancel.set()

    def _busy(self, busy: bool) -> None:
        self.stop_button.configure(state=tk.NORMAL if busy else tk.DISABLED)
        self.send_button.configure(state=tk.DISABLED if busy else tk.NORMAL)
        self.new_button.configure(state=tk.DISABLED if busy else tk.NORMAL)
        self.status.configure(text="reading the message…" if busy else self.status.cget("text"))

    def _poll(self) -> None:
        try:
            while True:
                kind, value = self.inbox.get_nowait()
                self._handle(kind, value)
        except queue.Empty:
            pass
        self.root.after(POLL_MS, self._poll)

    def _handle(self, kind: str, value: object) -> None:
        if kind == "first":
            self._add("Model: ")
            self.status.configure(text="replying…")
        elif kind in ("text", "guess"):
            self._add(str(value), "guess" if kind == "guess" else "")
        else:  # the end: a Turn, or a message when no reply was recorded
            stopped = isinstance(value, Turn) and value.finish_reason == "interrupted"
            self._add(" (stopped)\n" if stopped else "\n", "note")
            if not isinstance(value, Turn):
                self._add(f"({value})\n", "note")
            self.status.configure(text=stats_line(value) if isinstance(value, Turn) else str(value))
            self.cancel = None
            self._busy(False)


def _reply(
    conversation: Conversation,
    message: str,
    cancel: threading.Event,
    inbox: queue.Queue[tuple[str, object]],
    token_delay: float,
) -> None:
    """The worker thread: one reply, its events into ``inbox``, then its turn (or what went wrong)."""
    try:
        reply: Reply = conversation.send(message, cancel=cancel)
        inbox.put(("first", None))
        with reply:
            for event in reply:
                if event.text:
                    inbox.put(("guess" if event.from_draft else "text", event.text))
                time.sleep(token_delay)
        inbox.put(("end", reply.turn))
    except Cancelled:
        inbox.put(("end", "stopped while reading the message"))
    except EdgespecError as exc:
        inbox.put(("end", f"error: {exc}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="the target GGUF file")
    parser.add_argument("--draft", help="the draft GGUF file (same tokenizer)")
    parser.add_argument("--ctx-size", type=int, default=4096)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--temp", type=float, default=0.0)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--token-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with Pair(args.target, args.draft, n_ctx=args.ctx_size, n_threads=args.threads) as pair:
        settings = GenerationOptions(temperature=args.temp, strategy=args.strategy)
        root = tk.Tk()
        ChatApp(root, pair, settings, args.token_delay)
        root.mainloop()


if __name__ == "__main__":
    main()
