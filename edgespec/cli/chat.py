"""``edgespec chat``: an interactive conversation in the terminal, with speculation made visible.

Replies stream token by token; Ctrl-C stops one and keeps what was said. After each reply a
stats line shows how many tokens came from accepted guesses. Slash commands change the settings,
save the conversation, or start over.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from edgespec.cli.chat_input import Reader, reader
from edgespec.cli.options import generation_options, load_pair, model_options, sampling_options
from edgespec.conversation import Conversation, Reply, Totals
from edgespec.errors import EdgespecError, StateFileError
from edgespec.generate import Stats, TokenEvent
from edgespec.options import FLAGS

DRAFT_STYLE = "green"
"""Accepted-guess tokens under --show-draft: a standard ANSI colour, so the terminal's own palette
keeps it readable on dark and light backgrounds."""
NOTE_STYLE = "dim"

HELP = """\
/help               this help
/exit, /bye         leave (Ctrl-D too)
/clear              start a new conversation (caches reset)
/regen              redo the last reply
/system [TEXT]      show or set the system prompt
/set [NAME VALUE]   show or change a setting: {names}
/stats              this session's totals
/save FILE          write the conversation as JSON, and its caches to FILE.state
/load FILE          go back to a saved conversation (its caches too, if saved and valid)
A line of \"\"\" opens and closes a multi-line message; Alt+Enter inserts a newline.
Ctrl-C stops a reply. Start a message with a space to send text that begins with /."""


@click.command()
@model_options
@sampling_options
@click.option("--system", help="The system prompt.")
@click.option(
    "--show-draft", is_flag=True, help="Colour the tokens that came from accepted guesses (a terminal)."
)
@click.option("-q", "--quiet", is_flag=True, help="Hide the banner and the stats line after each reply.")
@click.option("--token-delay", type=click.FloatRange(min=0), default=0.0, hidden=True)
def chat(system: str | None, show_draft: bool, quiet: bool, token_delay: float, **options: Any) -> None:
    """Chat with a model pair in the terminal, replies streamed as they are generated."""
    settings = generation_options(options)
    with load_pair(**options) as pair:
        conversation = Conversation(pair, system=system, settings=settings)
        ui = ChatUI(conversation, reader(), show_draft=show_draft, quiet=quiet, token_delay=token_delay)
        ui.run()


# ---------------------------------------------------------------------------- output


def printable(text: str) -> str:
    """Model text without control characters (an escape sequence could rewrite the terminal)."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def _by_source(steps_by_source: dict[str, int]) -> str:
    """``draft 3, none 1``: steps per proposer, most first."""
    return ", ".join(f"{source} {n}" for source, n in sorted(steps_by_source.items(), key=lambda x: -x[1]))


def format_steps(strategy: str, steps_by_source: dict[str, int]) -> str:
    """``auto (steps: draft 3, none 1)``: the strategy and the steps each proposer served."""
    counts = _by_source(steps_by_source)
    return f"{strategy} (steps: {counts})" if counts else strategy


def format_stats(stats: Stats, strategy: str) -> str:
    """The line after each reply: tokens, speed, strategy, guesses, and the prompt tokens decoded."""
    return " · ".join(
        [
            f"{stats.n_tokens} tokens",
            f"{stats.tokens_per_second:.1f} tok/s",
            format_steps(strategy, stats.steps_by_source),
            f"drafted {stats.drafted}, accepted {stats.accepted} ({stats.acceptance:.0%})",
            f"{stats.mean_accepted_per_step:.2f} accepted/step",
            f"prefill {stats.prompt_prefilled}",
        ]
    )


def format_totals(totals: Totals) -> str:
    """``/stats``: the session's figures."""
    cached = totals.prompt_tokens - totals.prompt_prefilled
    return "\n".join(
        [
            f"replies: {totals.replies}",
            f"tokens: {totals.n_tokens} at {totals.tokens_per_second:.1f} tok/s",
            f"steps: {totals.steps} ({_by_source(totals.steps_by_source) or 'none yet'})",
            f"drafted {totals.drafted}, accepted {totals.accepted} ({totals.acceptance:.0%}), "
            f"{totals.mean_accepted_per_step:.2f} accepted/step",
            f"prompt tokens: {totals.prompt_tokens}, prefilled {totals.prompt_prefilled}, "
            f"{cached} from the cache",
        ]
    )


class ChatUI:
    """The read-reply loop: messages go to the conversation and replies stream to the console;
    slash commands go to :class:`Commands`."""

    def __init__(
        self,
        conversation: Conversation,
        reader: Reader,
        *,
        show_draft: bool = False,
        quiet: bool = False,
        token_delay: float = 0.0,
        console: Console | None = None,
    ) -> None:
        self.conversation = conversation
        self.reader = reader
        self.show_draft = show_draft
        self.quiet = quiet
        self.token_delay = token_delay
        self.console = console or Console(highlight=False, soft_wrap=True, emoji=False, markup=False)
        # NO_COLOR: rich drops colours but keeps attributes such as dim; plain text is asked for.
        self.note_style = None if self.console.no_color else NOTE_STYLE
        self._planned = False
        self._commands = Commands(conversation, self.note, self._respond, self._switch)
        self.commands = self._commands.by_name

    def _switch(self, conversation: Conversation) -> None:
        """Carry on with another conversation (``/load``); what was kept of this one goes."""
        self.conversation.pair.sessions.forget(self.conversation)
        self.conversation = self._commands.conversation = conversation

    def run(self) -> None:
        """Read and answer until Ctrl-D, /exit or /bye."""
        if not self.quiet:
            self._banner()
        while True:
            try:
                text = self.reader.read()
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line, as in a shell
            except EOFError:
                return
            if not self._handle(text):
                return

    def _handle(self, text: str) -> bool:
        """Answer one message or command; False to leave."""
        if not text.strip():
            return True
        if text.startswith("/"):
            name, _, arg = text.partition(" ")
            command = self.commands.get(name.strip())
            if command is None:
                self.note(f"unknown command {name}; /help lists them")
                return True
            try:
                return command(arg.strip())
            except EdgespecError as exc:
                self.note(f"error: {exc}")
                return True
        self._respond(lambda: self.conversation.send(text.strip()))
        return True

    # ------------------------------------------------------------------ replies

    def _respond(self, start: Callable[[], Reply]) -> None:
        """Stream one reply; Ctrl-C stops it, keeping what was said."""
        pair = self.conversation.pair
        bars, waiting = pair.progress, self._waiting()
        try:
            with self.console.status(waiting, spinner="dots") as status:
                # The spinner owns the terminal: a measurement's progress goes into its line.
                pair.progress = lambda stage, share: status.update(f"{waiting} {stage} {share:.0%}")
                reply = start()
        except KeyboardInterrupt:
            self.note("(interrupted)")
            return
        except EdgespecError as exc:
            self.note(f"error: {exc}")
            return
        finally:
            pair.progress = bars
        if reply.dropped:
            self._dropped_notice(reply.dropped)
        last = ""
        try:
            with reply:
                for event in reply:
                    last = self._show(event) or last
        except KeyboardInterrupt:
            pass
        except EdgespecError as exc:
            self.note(f"\nerror: {exc}")
        self._after(reply, last)

    def _waiting(self) -> str:
        """What the spinner says until the reply's first token (a terminal only)."""
        if self.conversation.settings.strategy == "auto" and not self._planned:
            self._planned = True  # the first auto reply measures the device, unless measured before
            return "planning for this device…"
        return "prefilling…"

    def _show(self, event: TokenEvent) -> str:
        """Print one token's text; returns the text printed."""
        text = printable(event.text)
        if text:
            style = DRAFT_STYLE if self.show_draft and event.from_draft else None
            self.console.print(text, style=style, end="")
        if self.token_delay:
            time.sleep(self.token_delay)
        return text

    def _after(self, reply: Reply, last: str) -> None:
        turn = reply.finish()
        if not last.endswith("\n"):
            self.console.print()
        if turn.finish_reason == "interrupted":
            self.note("(interrupted)")
        elif reply.context_full:
            self.note("(the context is full; the oldest turns will be dropped to make room)")
        if not self.quiet:
            self.note(format_stats(turn.stats, turn.strategy))

    def _dropped_notice(self, n: int) -> None:
        turns = "turn" if n == 1 else f"{n} turns"
        self.note(f"(dropped the oldest {turns} to fit the {self.conversation.pair.n_ctx}-token context)")

    def note(self, text: str) -> None:
        """A line that is not the model's: notices, stats, command answers."""
        self.console.print(text, style=self.note_style)

    def _banner(self) -> None:
        pair = self.conversation.pair
        models = pair.target.path.name + (f" + draft {pair.draft.path.name}" if pair.draft else "")
        models += " (with its MTP layers)" if pair.mtp_draft else ""
        self.note(f"edgespec chat · {models} · {pair.n_ctx}-token context · /help, Ctrl-D to leave")
        if self.show_draft and self.console.is_terminal and not self.console.no_color:
            self.console.print("green", style=DRAFT_STYLE, end="")
            self.note(": tokens the draft guessed and the target accepted")


class Commands:
    """chat's slash commands (:attr:`by_name`); each takes the text after its name and returns False
    to leave.

    Args:
        conversation: what the commands show and change.
        note: prints a line that is not the model's.
        respond: streams a reply, given what starts it (``/regen``).
        switch: carries on with another conversation (``/load``).
    """

    def __init__(
        self,
        conversation: Conversation,
        note: Callable[[str], None],
        respond: Callable[[Callable[[], Reply]], None],
        switch: Callable[[Conversation], None],
    ) -> None:
        self.conversation = conversation
        self.note = note
        self.respond = respond
        self.switch = switch
        self.by_name: dict[str, Callable[[str], bool]] = {
            "/help": self._help,
            "/exit": self._exit,
            "/bye": self._exit,
            "/clear": self._clear,
            "/regen": self._regen,
            "/system": self._system,
            "/set": self._set,
            "/stats": self._stats,
            "/save": self._save,
            "/load": self._load,
        }

    def _help(self, arg: str) -> bool:
        self.note(HELP.format(names=", ".join(FLAGS)))
        return True

    def _exit(self, arg: str) -> bool:
        return False

    def _clear(self, arg: str) -> bool:
        self.conversation.clear()
        self.note("(new conversation)")
        return True

    def _regen(self, arg: str) -> bool:
        self.respond(self.conversation.regen)
        return True

    def _system(self, arg: str) -> bool:
        if not arg:
            self.note(f"system prompt: {self.conversation.system or '(none)'}")
            return True
        self.conversation.set_system(arg)
        self.note("(system prompt set)")
        return True

    def _set(self, arg: str) -> bool:
        conversation = self.conversation
        if arg:
            conversation.set_settings(conversation.settings.parse_setting(arg))
            name = arg.split()[0]
            self.note(f"({name} = {conversation.settings.flags()[name]})")
        else:
            self.note(" ".join(f"{k}={v}" for k, v in conversation.settings.flags().items()))
        return True

    def _stats(self, arg: str) -> bool:
        self.note(format_totals(self.conversation.totals))
        return True

    def _save(self, arg: str) -> bool:
        if not arg:
            self.note("usage: /save FILE")
            return True
        saved = self.conversation.save(arg)
        if saved.state_path is None:
            self.note(f"(saved to {saved.path})")
        else:
            size = saved.state_bytes / 1e6
            self.note(f"(saved to {saved.path}, its caches to {saved.state_path.name}, {size:.1f} MB)")
        return True

    def _load(self, arg: str) -> bool:
        if not arg:
            self.note("usage: /load FILE")
            return True
        pair = self.conversation.pair
        try:
            conversation = Conversation.load(pair, arg)
            how = "its caches restored" if conversation in pair.sessions else "read again at the next turn"
        except StateFileError as exc:
            self.note(f"error: {exc}")
            conversation = Conversation.load(pair, arg, state=False)
            how = "read again at the next turn"
        self.switch(conversation)
        n = len(conversation.turns)
        self.note(f"(loaded {n} turn{'' if n == 1 else 's'} from {arg}: {how})")
        return True
