"""``edgespec chat`` driven from the outside: in a pseudo-terminal (pexpect), and through a pipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect  # type: ignore[import-untyped]
import pytest

from edgespec.cli.chat import format_stats, printable
from edgespec.cli.chat_input import is_open_block, unwrap_block
from edgespec.generate import Stats

STATS = re.compile(r"(\d+) tokens · [\d.]+ tok/s · (\w+)[^\n]*?prefill (\d+)")
DRAFT_LOG = re.compile(r"draft caught up (\d+) tokens")
PROMPT = ">>>"
LONG_REPLY = "a"  # the tiny target's greedy reply to this first message is over 100 tokens


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private data dir (chat history) and cache dir, a plain xterm, colour allowed."""
    out = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    out.update(
        XDG_DATA_HOME=str(tmp_path / "data"),
        EDGESPEC_CACHE_DIR=str(tmp_path / "cache"),
        PROMPT_TOOLKIT_NO_CPR="1",
        TERM="xterm",
    )
    return out


class Chat:
    """``edgespec chat`` running in a pseudo-terminal."""

    def __init__(
        self, args: list[str], env: dict[str, str], verbose: bool = False, timeout: int = 60
    ) -> None:
        argv = ["-m", "edgespec", *(["-v"] if verbose else []), "chat", *args]
        self.child = pexpect.spawn(
            sys.executable, argv, env=env, encoding="utf-8", timeout=timeout, dimensions=(50, 300)
        )

    def prompt(self) -> None:
        """Wait for the input prompt."""
        self.child.expect_exact(PROMPT)

    def say(self, text: str) -> re.Match[str]:
        """Send a message at the prompt; wait for the reply's stats line and the next prompt.

        ``self.output`` is then what came before the stats line (the reply, notices, log lines)."""
        self.child.sendline(text)
        self.child.expect(STATS)
        match = self.child.match
        self.output: str = self.child.before
        self.prompt()
        assert isinstance(match, re.Match)
        return match

    def command(self, text: str, answer: str) -> None:
        """Send a slash command, wait for its answer and the next prompt."""
        self.child.sendline(text)
        self.child.expect_exact(answer)
        self.prompt()

    def leave(self, how: str = "/exit") -> int:
        """Leave with a command (or Ctrl-D for ``""``); the exit status."""
        if how:
            self.child.sendline(how)
        else:
            self.child.sendeof()
        self.child.expect(pexpect.EOF)
        self.child.close()
        status = self.child.exitstatus
        assert isinstance(status, int)
        return status


@pytest.fixture
def models(tiny: dict[str, Path]) -> list[str]:
    """Model options for the tiny target with its identical draft, one thread."""
    return ["--target", str(tiny["target"]), "--draft", str(tiny["draft-same"]), "--threads", "1"]


@pytest.fixture
def greedy(models: list[str]) -> list[str]:
    """Model options plus greedy decoding with the draft model."""
    return [*models, "--temp", "0", "--strategy", "draft"]


def start(args: list[str], env: dict[str, str], verbose: bool = False, timeout: int = 60) -> Iterator[Chat]:
    """A chat at its first prompt, terminated if the test leaves it running."""
    chat = Chat(args, env, verbose, timeout)
    try:
        chat.prompt()
        yield chat
    finally:
        if chat.child.isalive():
            chat.child.terminate(force=True)


# ---------------------------------------------------------------------------- the terminal


def test_a_reply_streams_then_the_stats_line(greedy: list[str], env: dict[str, str]) -> None:
    for chat in start([*greedy, "--token-delay", "0.03"], env):
        chat.child.sendline(LONG_REPLY)
        chat.child.expect_exact("\r\n")  # the echoed input line
        time.sleep(1.0)
        early = chat.child.read_nonblocking(100_000, timeout=1)
        assert printable(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", early)).strip(), "no text streamed yet"
        assert "tok/s" not in early, "the reply should still be streaming"
        chat.child.expect(STATS)
        assert chat.child.match.group(2) == "draft"
        chat.prompt()
        assert chat.leave() == 0


def test_a_follow_up_turn_prefills_only_new_tokens(greedy: list[str], env: dict[str, str]) -> None:
    for chat in start([*greedy, "--max-tokens", "16"], env, verbose=True):
        first = chat.say("tell me about speculative decoding " * 9)  # 315 characters, one token each
        draft_first = int(DRAFT_LOG.findall(chat.output)[-1])
        second = chat.say("and then?")
        draft_second = int(DRAFT_LOG.findall(chat.output)[-1])
        assert int(first.group(3)) > 315
        # The new turn: end of the last reply, the message, the template's markers.
        assert int(second.group(3)) < 35
        assert draft_first > 315
        assert draft_second < 35 + 2 * 16  # plus up to two catch-up tokens per step
        assert chat.leave() == 0


def test_ctrl_c_stops_the_reply_and_the_conversation_goes_on(
    greedy: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    for chat in start([*greedy, "--token-delay", "0.05"], env):
        chat.child.sendline(LONG_REPLY)
        # Once the input line is accepted the terminal leaves raw mode; a Ctrl-C sent before that
        # (a loaded machine) would reach the next prompt as a key, not the reply as a signal.
        chat.child.expect_exact("\r\n")
        time.sleep(1.5)
        chat.child.sendintr()
        chat.child.expect_exact("(interrupted)")
        chat.prompt()
        follow_up = chat.say("go on")
        assert int(follow_up.group(3)) < 35  # the partial reply stayed in the cache
        chat.command(f"/save {tmp_path / 'chat.json'}", "saved to")
        assert chat.leave() == 0
    messages = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["finish_reason"] == "interrupted" and messages[1]["content"]


def test_save_then_load_in_a_new_chat_restores_the_caches(
    greedy: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    chat_file = tmp_path / "chat.json"
    for chat in start([*greedy, "--max-tokens", "16"], env):
        first = chat.say("tell me about speculative decoding " * 9)
        assert int(first.group(3)) > 315
        chat.command(f"/save {chat_file}", "its caches to chat.json.state")
        assert chat.leave() == 0
    for chat in start([*greedy, "--max-tokens", "16"], env):  # another process: caches from the file
        chat.command(f"/load {chat_file}", "(loaded 1 turn from")
        assert "its caches restored" in chat.child.before
        assert int(chat.say("and then?").group(3)) < 35  # only the new message is read
        assert chat.leave() == 0
    (tmp_path / "chat.json.state").write_bytes(b"EDGESPEC-STATE 1\n" + b"\0" * 8)
    for chat in start([*greedy, "--max-tokens", "16"], env):
        chat.child.sendline(f"/load {chat_file}")
        chat.child.expect(r"error: \S+chat.json.state: corrupt")
        chat.command("", "read again at the next turn")
        assert int(chat.say("and then?").group(3)) > 315  # refused: the chat is read again
        assert chat.leave() == 0


def test_ctrl_c_at_the_prompt_clears_the_line(greedy: list[str], env: dict[str, str]) -> None:
    for chat in start(greedy, env):
        chat.child.send("half a thought")
        chat.child.sendintr()
        chat.prompt()
        chat.say("hello")
        assert chat.leave() == 0


def test_set_with_a_bad_name_or_value_is_answered_without_leaving(
    greedy: list[str], env: dict[str, str]
) -> None:
    for chat in start(greedy, env):
        chat.command("/set temp hot", "temp must be a number >= 0")
        chat.command("/set top_p 0", "top_p must be a number in (0, 1]")
        chat.command("/set colour blue", "settings: temp, top_k, top_p, min_p, seed, max_tokens, strategy")
        chat.command("/set strategy fast", "one of auto, draft, mtp, lookup, none")
        chat.command("/set top_k", "top_k needs a value: an integer >= 0")
        chat.command("/set max_tokens 3", "(max_tokens = 3)")
        assert int(chat.say("hello").group(1)) <= 3
        chat.command("/set", "max_tokens=3")
        chat.command("/frobnicate", "unknown command /frobnicate")
        assert chat.child.isalive()
        assert chat.leave("") == 0  # Ctrl-D


@pytest.mark.parametrize("how", ["/exit", "/bye", ""])
def test_exit_bye_and_ctrl_d_leave_with_status_0(greedy: list[str], env: dict[str, str], how: str) -> None:
    for chat in start(greedy, env):
        assert chat.leave(how) == 0


def test_context_overflow_drops_the_oldest_turns(greedy: list[str], env: dict[str, str]) -> None:
    # --ctx-size 128 becomes 256 (llama.cpp's granularity); each turn takes about 100 tokens.
    for chat in start([*greedy, "--ctx-size", "128", "--max-tokens", "8", "--system", "sys"], env):
        chat.say("first " + "x" * 70)
        chat.say("second " + "y" * 70)
        chat.child.sendline("third " + "z" * 70)
        chat.child.expect(r"dropped the oldest (turn|\d+ turns) to fit the 256-token context")
        chat.child.expect(STATS)
        chat.prompt()
        chat.command("/system", "system prompt: sys")
        assert chat.leave() == 0


def test_multi_line_input_and_history_file(greedy: list[str], env: dict[str, str], tmp_path: Path) -> None:
    for chat in start(greedy, env):
        for line in ['"""', "line one", "line two", '"""']:
            chat.child.sendline(line)
        chat.child.expect(STATS)
        chat.prompt()
        chat.child.send("first half")
        chat.child.send("\x1b\r")  # Alt+Enter
        chat.child.send("second half\r")
        chat.child.expect(STATS)
        chat.prompt()
        chat.command(f"/save {tmp_path / 'chat.json'}", "saved to")
        assert chat.leave() == 0
    data = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    users = [m["content"] for m in data["messages"] if m["role"] == "user"]
    assert users == ["line one\nline two", "first half\nsecond half"]
    history = (Path(env["XDG_DATA_HOME"]) / "edgespec" / "chat_history").read_text(encoding="utf-8")
    assert "+first half" in history and "+second half" in history


def test_show_draft_colours_accepted_guesses(greedy: list[str], env: dict[str, str]) -> None:
    for chat in start([*greedy, "--show-draft"], env):
        chat.child.sendline(LONG_REPLY)
        chat.child.expect(STATS)
        assert "\x1b[32m" in chat.child.before  # green: tokens the draft guessed and the target kept
        chat.prompt()
        assert chat.leave() == 0


def test_no_colour_with_no_color_set(greedy: list[str], env: dict[str, str]) -> None:
    for chat in start([*greedy, "--show-draft"], {**env, "NO_COLOR": "1"}):
        chat.child.sendline(LONG_REPLY)
        chat.child.expect(STATS)
        assert "\x1b[32m" not in chat.child.before and "\x1b[2m" not in chat.child.before
        chat.prompt()
        assert chat.leave() == 0


def test_commands_help_regen_clear_system_stats(greedy: list[str], env: dict[str, str]) -> None:
    for chat in start(greedy, env):
        chat.command("/help", "/save FILE")
        chat.command("/regen", "no reply to redo")
        chat.say("hello there")
        assert int(chat.say("/regen").group(3)) == 0  # the prompt is still cached
        chat.command("/system Be terse.", "(system prompt set)")
        chat.command("/stats", "replies: 2")
        chat.command("/clear", "(new conversation)")
        chat.command("/system", "system prompt: Be terse.")
        assert chat.leave() == 0


# ---------------------------------------------------------------------------- a pipe


def run_piped(args: list[str], text: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``edgespec chat`` with stdin and stdout as pipes."""
    return subprocess.run(
        [sys.executable, "-m", "edgespec", "chat", *args],
        input=text,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_piped_output_is_plain_text(greedy: list[str], env: dict[str, str]) -> None:
    done = run_piped([*greedy, "--show-draft"], 'hello\n"""\ntwo\nlines\n"""\n', env)
    assert done.returncode == 0, done.stderr
    assert len(STATS.findall(done.stdout)) == 2
    assert "\x1b" not in done.stdout


def test_quiet_hides_banner_and_stats(greedy: list[str], env: dict[str, str]) -> None:
    done = run_piped([*greedy, "--quiet"], "hello\n/bye\n", env)
    assert done.returncode == 0, done.stderr
    assert "tok/s" not in done.stdout and "edgespec chat" not in done.stdout


def test_the_default_strategy_plans_for_the_device(models: list[str], env: dict[str, str]) -> None:
    # Greedy, so that the plan (which depends on timings measured here) does not change the reply's path.
    done = run_piped([*models, "--temp", "0"], "hello\n", env)
    assert done.returncode == 0, done.stderr
    assert STATS.search(done.stdout) and " auto " in done.stdout


def test_a_model_without_a_chat_template_is_a_clean_error(tiny: dict[str, Path], env: dict[str, str]) -> None:
    done = run_piped(["--target", str(tiny["notemplate"]), "--threads", "1"], "hello\n", env)
    assert done.returncode == 1
    assert "chat template" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- helpers


def test_blocks() -> None:
    assert is_open_block('"""') and is_open_block('"""\nabc')
    assert not is_open_block('"""\nabc\n"""') and not is_open_block("abc")
    assert unwrap_block('"""\na\nb\n"""') == "a\nb" and unwrap_block("plain") == "plain"


def test_printable_drops_control_characters() -> None:
    assert printable("a\x1b[2Jb\x07\tc\nd") == "a[2Jb\tc\nd"


def test_stats_line() -> None:
    stats = Stats(steps=4, drafted=12, accepted=9, n_tokens=13, decode_seconds=0.5, prompt_prefilled=7)
    stats.steps_by_source = {"draft": 3, "none": 1}
    line = format_stats(stats, "auto")
    assert line == (
        "13 tokens · 26.0 tok/s · auto (steps: draft 3, none 1) · drafted 12, accepted 9 (75%) · "
        "2.25 accepted/step · prefill 7"
    )
    assert STATS.search(line)


# ---------------------------------------------------------------------------- the real pair


@pytest.mark.real
def test_real_pair_remembers_the_first_turn(real_paths: dict[str, Path], env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "EDGESPEC_CACHE_DIR"}  # the cache holding the pair
    if "EDGESPEC_CACHE_DIR" in os.environ:
        env["EDGESPEC_CACHE_DIR"] = os.environ["EDGESPEC_CACHE_DIR"]
    args = ["--target", str(real_paths["target"]), "--draft", str(real_paths["draft"])]
    args += ["--temp", "0", "--max-tokens", "48", "--ctx-size", "1024", "--strategy", "draft"]
    for chat in start(args, env, timeout=600):
        chat.say("My cat is called Miso. Just say OK.")
        chat.child.sendline("What is my cat called? Answer in one word.")
        chat.child.expect(STATS)
        assert "Miso" in chat.child.before
        second = chat.child.match
        assert int(second.group(3)) < 40  # only the new turn was prefilled
        chat.prompt()
        assert chat.leave() == 0
