"""Streaming text: whole UTF-8 characters only, stop strings found across token boundaries."""

from __future__ import annotations

from edgespec.textstream import TextStream


def feed(stream: TextStream, pieces: list[bytes]) -> list[str]:
    return [stream.push(p) for p in pieces]


def test_multibyte_characters_split_across_tokens_are_never_emitted_in_halves() -> None:
    data = "naïve 🙂 ok".encode()
    stream = TextStream()
    out = feed(stream, [data[i : i + 1] for i in range(len(data))])
    assert "".join(out) + stream.flush() == "naïve 🙂 ok"
    assert all("\ufffd" not in piece for piece in out)
    emoji_bytes = "🙂".encode()
    start = data.index(emoji_bytes)
    assert out[start : start + 3] == ["", "", ""] and out[start + 3] == "🙂"


def test_an_unfinished_character_at_the_end_becomes_a_replacement() -> None:
    stream = TextStream()
    assert stream.push(b"ab\xe2\x82") == "ab"
    assert stream.flush() == "\ufffd"


def test_stop_string_split_across_tokens() -> None:
    stream = TextStream(stop=["</answer>"])
    out = feed(stream, [b"42 is it", b"</ans", b"wer> and more"])
    assert "".join(out) == "42 is it"
    assert stream.stopped and stream.text == "42 is it"
    assert stream.push(b"more") == "" and stream.flush() == ""


def test_text_that_only_looks_like_a_stop_prefix_is_released() -> None:
    stream = TextStream(stop=["STOP"])
    assert stream.push(b"a ST") == "a "
    assert stream.push(b"ORM") == "STORM"
    assert stream.push(b"S") == ""
    assert stream.flush() == "S"
    assert not stream.stopped


def test_earliest_of_several_stop_strings_wins() -> None:
    stream = TextStream(stop=["world", "lo w"])
    assert "".join(feed(stream, [b"hel", b"lo wor", b"ld"])) == "hel"
    assert stream.stopped


def test_stop_string_inside_a_multibyte_sequence() -> None:
    stream = TextStream(stop=["é!"])
    data = "café!".encode()
    out = feed(stream, [data[:4], data[4:5], data[5:]])
    assert "".join(out) == "caf" and stream.stopped
