"""Many conversations on one pair: one set aside while another talks, and resumed with nothing of
it read again and the same greedy reply as if it had never been set aside; kept in memory up to a
budget, oldest first out; saved to disk beside the chat and refused whole when stale or corrupt."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgespec import Pair
from edgespec.chatfile import state_path
from edgespec.conversation import Conversation
from edgespec.errors import StateFileError
from edgespec.options import GenerationOptions
from edgespec.proposers import common_prefix

GREEDY = GenerationOptions(temperature=0.0, max_tokens=24, strategy="draft")
ARCHS = ["target", "qwen35-target", "lfm2-target"]  # a KV cache, and two hybrids


def open_pair(tiny: dict[str, Path], arch: str, **options: object) -> Pair:
    draft = tiny[arch.replace("target", "draft-noisy")]
    return Pair(tiny[arch], draft, n_ctx=1024, n_threads=1, max_draft=4, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=ARCHS)
def pair(tiny: dict[str, Path], request: pytest.FixtureRequest) -> Iterator[Pair]:
    with open_pair(tiny, request.param) as p:
        yield p


def say(conv: Conversation, text: str) -> tuple[str, int]:
    """The reply's text, and the prompt tokens the target read for it."""
    with conv.send(text) as reply:
        for _ in reply:
            pass
    turn = conv.turns[-1]
    return turn.reply, turn.stats.prompt_prefilled


MESSAGES = ["hello world", "tell me more about it", "and then?"]


def straight(pair: Pair) -> list[tuple[str, int]]:
    """The conversation never set aside: each turn's reply and prefill."""
    pair.reset()
    conv = Conversation(pair, system="be brief", settings=GREEDY)
    return [say(conv, m) for m in MESSAGES]


def test_a_conversation_set_aside_resumes_reading_only_its_new_message(pair: Pair) -> None:
    want = straight(pair)
    a = Conversation(pair, system="be brief", settings=GREEDY)
    b = Conversation(pair, system="you are a pirate", settings=GREEDY)
    got = [say(a, MESSAGES[0]), say(a, MESSAGES[1])]
    say(b, "ahoy")  # a's caches set aside, b read from the start
    assert a in pair.sessions and pair.sessions.current is b
    got.append(say(a, MESSAGES[2]))  # a's caches brought back: only the new message is read
    assert [reply for reply, _ in got] == [reply for reply, _ in want]
    assert got[2][1] == want[2][1]  # the prefill of a conversation never set aside
    assert pair.sessions.current is a and b in pair.sessions


def test_a_resumed_reply_redone_reads_nothing(tiny: dict[str, Path]) -> None:
    # A KV cache only: a hybrid's recurrent state comes back as it was at the reply's end, and
    # going back to the reply's start would need the snapshot its context kept there.
    with open_pair(tiny, "target") as pair:
        a = Conversation(pair, settings=GREEDY)
        b = Conversation(pair, settings=GREEDY)
        first, _ = say(a, "hello world")
        say(b, "something else")
        with a.regen() as reply:
            for _ in reply:
                pass
        assert a.turns[-1].reply == first and a.turns[-1].stats.prompt_prefilled == 0


@pytest.mark.parametrize("arch", ["qwen35-target", "lfm2-target"])
def test_on_a_hybrid_a_resumed_reply_redone_is_read_again_the_same(tiny: dict[str, Path], arch: str) -> None:
    # What the README says: the recurrent state comes back as it was at the reply's end, with no
    # snapshot at the reply's start, so a regen right after a resume reads the prompt again.
    with open_pair(tiny, arch) as pair:
        a = Conversation(pair, settings=GREEDY)
        b = Conversation(pair, settings=GREEDY)
        first, _ = say(a, "hello world")
        say(b, "something else")
        with a.regen() as reply:
            for _ in reply:
                pass
        turn = a.turns[-1]
        assert turn.reply == first and turn.stats.prompt_prefilled == turn.stats.prompt_tokens - 1


def test_states_beyond_the_budget_go_oldest_first(tiny: dict[str, Path]) -> None:
    with open_pair(tiny, "target") as pair:
        convs = [Conversation(pair, system=f"you are number {i}", settings=GREEDY) for i in range(3)]
        for conv in convs:
            say(conv, "hello world")
        two = pair.sessions.nbytes  # 0 and 1 set aside, 2 in the caches; each about as big
        pair.sessions.budget = two + two // 4
        say(Conversation(pair, settings=GREEDY), "hi")  # sets 2 aside: over budget, 0 goes
        assert convs[0] not in pair.sessions and convs[1] in pair.sessions and convs[2] in pair.sessions
        assert pair.sessions.nbytes <= pair.sessions.budget
        _, prefilled = say(convs[1], "more")  # kept: only the new message
        assert prefilled < convs[1].turns[-1].stats.prompt_tokens / 2
        held = list(pair.engine.history)  # convs[1]'s
        with convs[0].send("more") as reply:  # gone: read again, but for what the caches share
            prompt = reply.prompt.tokens
            for _ in reply:
                pass
        shared = common_prefix(held[:-1], prompt[:-1])
        assert (
            shared < len(prompt) / 3 and reply.generation.stats.prompt_prefilled == len(prompt) - 1 - shared
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_a_saved_chat_loads_into_a_new_pair_and_resumes_without_reading_again(
    tiny: dict[str, Path], tmp_path: Path, arch: str
) -> None:
    with open_pair(tiny, arch) as pair:
        want = straight(pair)
        conv = Conversation(pair, system="be brief", settings=GREEDY)
        say(conv, MESSAGES[0])
        say(conv, MESSAGES[1])
        saved = conv.save(tmp_path / "chat.json")
    assert saved.state_path == state_path(tmp_path / "chat.json") and saved.state_bytes > 0
    with open_pair(tiny, arch) as pair:  # another process's pair, as good as
        conv = Conversation.load(pair, tmp_path / "chat.json")
        assert conv in pair.sessions and [t.reply for t in conv.turns] == [r for r, _ in want[:2]]
        assert say(conv, MESSAGES[2]) == want[2]


# ---------------------------------------------------------------------------- stale and corrupt files


@pytest.fixture(scope="module")
def saved(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chat of the tiny llama pair with its state beside it."""
    path = tmp_path_factory.mktemp("saved") / "chat.json"
    with open_pair(tiny, "target") as pair:
        conv = Conversation(pair, settings=GREEDY)
        say(conv, "hello world")  # drafted: both caches hold it
        conv.set_settings(GREEDY.replace(strategy="lookup"))  # a chat a pair without draft can load
        conv.save(path)
    return path


def spoil(path: Path, how: str) -> None:
    state = state_path(path)
    data = bytearray(state.read_bytes())
    if how == "flipped byte":
        data[-100] ^= 0x40
    elif how == "cut short":
        del data[-1000:]
    elif how == "not a state file":
        data[:8] = b"GARBAGE!"
    elif how == "edited chat":
        chat = json.loads(path.read_text())
        chat["turns"][0]["user"] = chat["messages"][0]["content"] = "hello there"
        path.write_text(json.dumps(chat))
    state.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("flipped byte", "corrupt"),
        ("cut short", "corrupt"),
        ("not a state file", "not an edgespec state file"),
        ("edited chat", "does not match the chat"),
    ],
)
def test_a_corrupt_or_stale_state_file_is_refused_and_the_chat_loads_without_it(
    tiny: dict[str, Path], saved: Path, tmp_path: Path, how: str, says: str
) -> None:
    path = tmp_path / "chat.json"
    shutil.copy(saved, path)
    shutil.copy(state_path(saved), state_path(path))
    spoil(path, how)
    with open_pair(tiny, "target") as pair:
        with pytest.raises(StateFileError, match=says) as refused:
            Conversation.load(pair, path)
        assert "\n" not in str(refused.value) and str(path) in str(refused.value)
        assert pair.sessions.nbytes == 0  # nothing of it was kept
        conv = Conversation.load(pair, path, state=False)
        _, prefilled = say(conv, "more")
        assert prefilled == conv.turns[-1].stats.prompt_tokens - 1  # read again, whole


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"target": "draft-noisy"}, "another target model file"),
        ({"draft": "draft-same"}, "another draft model file"),
        ({"draft": None}, "saved with a draft"),
        ({"exact": True}, "other target settings"),
    ],
)
def test_a_state_of_other_models_or_settings_is_refused(
    tiny: dict[str, Path], saved: Path, change: dict[str, object], says: str
) -> None:
    target = tiny[str(change.get("target", "target"))]
    draft = change.get("draft", "draft-noisy")
    exact = bool(change.get("exact", False))
    with Pair(target, tiny[str(draft)] if draft else None, n_ctx=1024, n_threads=1, exact=exact) as pair:
        with pytest.raises(StateFileError, match=says):
            Conversation.load(pair, saved)
        assert pair.sessions.nbytes == 0
