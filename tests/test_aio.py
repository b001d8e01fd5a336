"""``Pair.astream`` / ``agenerate`` from asyncio: the same text as ``stream``, the event loop free
while llama.cpp works, a cancelled task stopping its generation within one step, the pair usable
after, and two tasks on one pair answered whole in turn."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgespec import Pair, Result
from edgespec.errors import InvalidParameterError, PairBusyError

ROOT = Path(__file__).resolve().parent.parent

GREEDY = {"temperature": 0.0, "max_tokens": 60, "strategy": "draft"}


@pytest.fixture(scope="module")
def pair(tiny: dict[str, Path]) -> Iterator[Pair]:
    with Pair(tiny["target"], tiny["draft-noisy"], n_ctx=512, n_threads=1, max_draft=4) as p:
        yield p


def test_astream_gives_what_stream_gives(pair: Pair) -> None:
    want = pair.generate("hello world", **GREEDY)

    async def main() -> tuple[str, Result | None]:
        text = ""
        async with pair.astream("hello world", **GREEDY) as gen:
            async for event in gen:
                text += event.text
        return text, gen.result

    text, result = asyncio.run(main())
    assert text == want.text and result is not None
    assert result.token_ids == want.token_ids and result.stats.steps == want.stats.steps


def test_a_cancelled_task_stops_within_one_step_and_the_next_request_is_answered(pair: Pair) -> None:
    want = pair.generate("a", **GREEDY).token_ids

    async def main() -> tuple[int, int, int, list[int]]:
        got = asyncio.Event()
        seen = []

        async def reader() -> None:
            async for event in pair.astream("hello world", **{**GREEDY, "max_tokens": 400}):
                seen.append(event.token)
                if len(seen) == 5:
                    got.set()

        task = asyncio.create_task(reader())
        await got.wait()
        before = len(pair.engine.history)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while pair.access.busy:  # the generation's thread finishes the step in progress
            await asyncio.sleep(0.001)
        after = len(pair.engine.history)
        result = await pair.agenerate("a", **GREEDY)
        return before, after, len(seen), result.token_ids

    before, after, n_seen, next_reply = asyncio.run(main())
    assert n_seen == 5 and next_reply == want
    assert after - before <= 4 + 1  # at most one more step: max_draft guesses and the target's token


def test_the_event_loop_runs_while_the_pair_works(pair: Pair) -> None:
    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await pair.agenerate("hello world", **{**GREEDY, "max_tokens": 200, "strategy": "none"})
        ticker.cancel()
        return ticks

    assert asyncio.run(main()) > 20  # the loop went on ticking between the tokens


def test_two_tasks_on_one_pair_are_answered_whole_in_turn(pair: Pair) -> None:
    prompts = ["hello world", "a", "hello world"]
    want = [pair.generate(p, **GREEDY).token_ids for p in prompts]

    async def main() -> list[list[int]]:
        results = await asyncio.gather(*(pair.agenerate(p, **GREEDY) for p in prompts))
        return [r.token_ids for r in results]

    assert asyncio.run(main()) == want


def test_errors_come_out_of_the_async_for(pair: Pair) -> None:
    async def bad() -> None:
        async for _ in pair.astream("a", strategy="bogus"):
            pass

    with pytest.raises(InvalidParameterError, match="strategy"):
        asyncio.run(bad())

    async def busy() -> None:
        held = pair.stream("a", **GREEDY)  # this thread holds the pair
        try:
            async for _ in pair.astream("a", **GREEDY, wait=False):
                pass
        finally:
            held.close()

    with pytest.raises(PairBusyError):
        asyncio.run(busy())


def test_aclose_stops_and_keeps_what_was_generated(pair: Pair) -> None:
    async def main() -> tuple[int, str, int]:
        gen = pair.astream("hello world", **{**GREEDY, "max_tokens": 400})
        n = 0
        async for _ in gen:
            n += 1
            if n == 3:
                break
        await gen.aclose()
        assert gen.result is not None
        return n, gen.result.finish_reason, len(gen.result.token_ids)

    n, reason, n_tokens = asyncio.run(main())
    assert reason == "interrupted" and n <= n_tokens <= n + 5  # at most the step in progress more
    assert not pair.access.busy


def test_closing_the_pair_ends_an_async_generation_waiting_to_be_read(tiny: dict[str, Path]) -> None:
    pair = Pair(tiny["target"], n_ctx=512, n_threads=1)

    async def main() -> str:
        gen = pair.astream("hello world", temperature=0, max_tokens=400, strategy="none")
        await gen.__anext__()  # its thread now waits to be asked for the next event
        pair.close()  # sets its cancel event and waits for it to let go
        async for _ in gen:
            pass
        assert gen.result is not None
        return gen.result.finish_reason

    assert asyncio.run(main()) == "interrupted"


def test_the_readmes_async_example_runs(tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Embedding in an app", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    models = f"target, draft = {str(tiny['target'])!r}, {str(tiny['draft-noisy'])!r}"
    source, n = re.subn(r"^target, draft = .*$", models, code.group(1), flags=re.M)
    assert n == 1
    exec(compile(source, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "loading target 100%" in out and "loading draft 100%" in out
    with Pair(tiny["target"], tiny["draft-noisy"]) as pair:  # the last reply, as a fresh pair gives it
        want = pair.generate("def add(a, b):", max_tokens=32, temperature=0)
    assert out.rstrip("\n").endswith(want.text.rstrip("\n"))
