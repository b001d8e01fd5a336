"""The FastAPI app: OpenAI's routes over one loaded pair.

Requests are validated and turned into a :class:`~edgespec.server.worker.Job` here, on the event
loop; the generation itself runs on the worker thread, and its text comes back either whole or as
server-sent events.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from edgespec import __version__, toolcalls
from edgespec.errors import EdgespecError, InvalidParameterError
from edgespec.generate import Generation, Pair, Prompt, Result
from edgespec.messages import check_messages
from edgespec.options import RULES, GenerationOptions
from edgespec.server import errors
from edgespec.server.errors import APIError
from edgespec.server.responses import Reply
from edgespec.server.schemas import ChatCompletionRequest, CompletionRequest, GenerationRequest
from edgespec.server.structured import request_constraint, request_tools
from edgespec.server.worker import Job, Message, QueueFullError, Started, Worker
from edgespec.toolcalls import Splitter
from edgespec.tools import Tools

POLL_S = 0.2
"""How often a request waiting for its generation checks that its client is still there."""


@dataclass
class ServerConfig:
    """How the server answers: which model id it serves, who may ask, and request defaults."""

    model_id: str
    """The id GET /v1/models lists; requests must name it (or the target's file name)."""
    api_key: str | None = None
    """When set, /v1 requests need ``Authorization: Bearer <api_key>``."""
    cors: Sequence[str] = ()
    """Origins browsers may call from (``*``: any)."""
    queue_size: int = 8
    """Requests that may wait while one runs; one more is answered 503."""
    defaults: GenerationOptions = field(default_factory=GenerationOptions)
    """The options for fields a request leaves out."""
    max_tokens_limit: int | None = None
    """When set, no request generates more than this many tokens."""
    retry_after_s: int = 1


class ClientGoneError(Exception):
    """The client disconnected before its answer was ready."""


def create_app(pair: Pair, config: ServerConfig) -> FastAPI:
    """The app serving ``pair``. Its worker thread starts with the first request."""
    worker = Worker(pair, config.queue_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        worker.stop()

    app = FastAPI(
        title="edgespec",
        version=__version__,
        description="OpenAI-compatible API over a speculative-decoding model pair.",
        lifespan=lifespan,
    )
    errors.install(app)
    if config.api_key:
        _require_key(app, config.api_key)
    if config.cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    _routes(app, _Server(pair, config, worker))
    return app


def _require_key(app: FastAPI, key: str) -> None:
    @app.middleware("http")
    async def check_key(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path.startswith("/v1") and request.method != "OPTIONS":
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                what = "wrong API key" if given else "missing API key (send Authorization: Bearer KEY)"
                return APIError(401, what, code="invalid_api_key").response()
        return await call_next(request)


@dataclass
class _Server:
    pair: Pair
    config: ServerConfig
    worker: Worker

    def model_ids(self) -> set[str]:
        path = self.pair.target.path
        return {self.config.model_id, path.name, path.stem}

    def model_card(self) -> dict[str, Any]:
        return {
            "id": self.config.model_id,
            "object": "model",
            "created": int(self.pair.target.path.stat().st_mtime),
            "owned_by": "edgespec",
            "target": self.pair.target.path.name,
            "draft": self.pair.draft.path.name if self.pair.draft else None,
            "n_ctx": self.pair.n_ctx,
        }

    def check_model(self, model: str) -> None:
        if model not in self.model_ids():
            raise APIError(
                400,
                f"unknown model {model!r}; this server serves {self.config.model_id!r}",
                param="model",
                code="model_not_found",
            )

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.config.model_id,
            "busy": self.worker.busy,
            "waiting": self.worker.waiting,
            "queue_size": self.worker.queue_size,
            "served": self.worker.n_served,
            "cancelled": self.worker.n_cancelled,
        }

    def options(self, body: GenerationRequest) -> GenerationOptions:
        """The generation options of a request, its constraint included."""
        options = request_options(body, self.config.defaults, self.config.max_tokens_limit)
        return options.replace(constraint=request_constraint(body))

    async def answer(self, request: Request, body: GenerationRequest, prompt: Prompt | list[int]) -> Response:
        """Run a generation and answer with it, whole or streamed."""
        self.check_model(body.model)
        tools = request_tools(body)
        start = _starter(prompt, self.options(body), tools)
        reply = Reply(self.config.model_id, chat=isinstance(body, ChatCompletionRequest))
        job = Job(start, asyncio.get_running_loop(), stream=bool(body.stream), id=reply.id)
        try:
            self.worker.submit(job)
        except QueueFullError:
            raise APIError(
                503,
                f"the server is busy ({self.worker.queue_size} requests waiting); retry shortly",
                type="server_error",
                code="queue_full",
                headers={"Retry-After": str(self.config.retry_after_s)},
            ) from None
        try:
            _raise_failure(await _receive(request, job))  # prefilled, or refused
            if body.stream:
                splitter = _splitter(self.pair, tools)
                events = _stream(job, reply, body.include_usage(), splitter)
                # The background task stops the generation even if the stream never started.
                return EventSourceResponse(events, sep="\n", ping=15, background=BackgroundTask(job.cancel))
            return JSONResponse(reply.whole(await _result(request, job)))
        except ClientGoneError:
            return Response(status_code=499)  # nobody reads it
        except BaseException:
            job.cancel()
            raise


def _routes(app: FastAPI, server: _Server) -> None:
    @app.get("/health", summary="Whether the server is up, and how busy")
    async def health() -> dict[str, Any]:
        return server.health()

    @app.get("/v1/models", summary="The model this server serves")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [server.model_card()]}

    @app.get("/v1/models/{model}", summary="One model")
    async def model(model: str) -> dict[str, Any]:
        if model not in server.model_ids():
            raise APIError(404, f"unknown model {model!r}", param="model", code="model_not_found")
        return server.model_card()

    @app.post("/v1/chat/completions", summary="Reply to a conversation", response_model=None)
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        if body.max_completion_tokens is not None:
            body.max_tokens = body.max_completion_tokens
        # Checked here, so that a refused message never waits in the queue.
        return await server.answer(request, body, check_messages(body.messages))

    @app.post("/v1/completions", summary="Continue a text", response_model=None)
    async def completions(request: Request, body: CompletionRequest) -> Response:
        return await server.answer(request, body, completion_prompt(body.prompt, server.pair.target.n_vocab))


def request_options(
    body: GenerationRequest, defaults: GenerationOptions, limit: int | None
) -> GenerationOptions:
    """The request's fields over the server's defaults, checked by :class:`GenerationOptions`.

    Every field the request shares with :class:`GenerationOptions` (by name) is taken when given;
    OpenAI's conventions are translated first: ``top_p`` 0 is the top token alone, a negative seed
    is llama-server's (-1: random).
    """
    derived = ("tools", "constraint")  # from OpenAI's own shapes: request_tools, request_constraint
    given = {n: getattr(body, n) for n in RULES if n not in derived and getattr(body, n, None) is not None}
    given["stop"] = tuple(body.stop_strings())
    if given.get("top_p") == 0:  # the smallest set holding no mass: the top token alone
        given["temperature"], given["top_p"] = 0.0, 1.0
    seed = given.get("seed")
    if seed is not None and seed < 0:  # llama-server: -1 is a random seed
        given["seed"] = None if seed == -1 else seed % 2**64
    options = defaults.replace(**given)
    if limit is not None and options.max_tokens > limit:
        options = options.replace(max_tokens=limit)
    return options


def completion_prompt(prompt: str | list[str] | list[int] | list[list[int]], n_vocab: int) -> str | list[int]:
    """One prompt, as text or token ids (checked against the vocabulary)."""
    if isinstance(prompt, str):
        return prompt
    ids = [t for t in prompt if isinstance(t, int)]
    if prompt and len(ids) == len(prompt):
        return _token_ids(ids, n_vocab)
    if len(prompt) != 1:
        raise APIError(400, f"give one prompt per request, got {len(prompt)}", param="prompt")
    one = prompt[0]
    if isinstance(one, str):
        return one
    return _token_ids([one] if isinstance(one, int) else one, n_vocab)


def _token_ids(tokens: list[int], n_vocab: int) -> list[int]:
    bad = [t for t in tokens if not 0 <= t < n_vocab]
    if bad:
        raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{n_vocab - 1})", param="prompt")
    if not tokens:
        raise APIError(400, "the prompt has no tokens", param="prompt")
    return tokens


def _starter(
    prompt: Prompt | list[int], options: GenerationOptions, tools: Tools | None
) -> Callable[[Pair], Generation]:
    def start(pair: Pair) -> Generation:
        try:
            tokens = pair.prompter.tokenize(prompt, None, tools)
        except UnicodeEncodeError as exc:  # JSON can carry lone surrogates, which are not text
            raise InvalidParameterError(f"the prompt is not valid Unicode: {exc.reason}") from exc
        if not tokens:
            raise InvalidParameterError("the prompt is empty")
        return pair.stream(tokens, options, tools=tools)

    return start


def _splitter(pair: Pair, tools: Tools | None) -> Splitter | None:
    """What reads a streamed reply's tool calls out of its text; None when it may make none."""
    if tools is None or tools.choice == "none":
        return None
    return toolcalls.detect(pair.prompter.template(), tools.names())[0].splitter()


async def _receive(request: Request, job: Job) -> Message:
    """The job's next message; cancels the job and raises ClientGoneError if the client left."""
    while True:
        try:
            return await asyncio.wait_for(job.inbox.get(), POLL_S)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                raise ClientGoneError from None


def _raise_failure(message: Message) -> None:
    if isinstance(message, Exception):
        raise message


async def _result(request: Request, job: Job) -> Result:
    while True:
        message = await _receive(request, job)
        _raise_failure(message)
        if isinstance(message, Result):
            return message


async def _stream(
    job: Job, reply: Reply, include_usage: bool, splitter: Splitter | None = None
) -> AsyncIterator[str]:
    """Server-sent events: chunks of text (and tool calls, which ``splitter`` reads out of the
    text), the finish, optionally the usage, then ``[DONE]``."""
    n_calls = 0

    def chunks(pieces: list[toolcalls.Piece]) -> Iterator[str]:
        nonlocal n_calls
        for piece in pieces:
            if isinstance(piece, str):
                yield json.dumps(reply.chunk(piece), ensure_ascii=False)
            else:
                yield json.dumps(reply.tool_call_chunk(piece, n_calls), ensure_ascii=False)
                n_calls += 1

    try:
        if reply.chat:
            yield json.dumps(reply.first_chunk())
        while True:
            message = await job.inbox.get()
            if isinstance(message, str):
                for chunk in chunks(splitter.push(message) if splitter else [message]):
                    yield chunk
            elif isinstance(message, Result):
                for chunk in chunks(splitter.finish() if splitter else []):
                    yield chunk
                yield json.dumps(reply.last_chunk(message), ensure_ascii=False)
                if include_usage:
                    yield json.dumps(reply.usage_chunk(message))
                break
            elif isinstance(message, Exception):
                yield json.dumps(_stream_error(message))
                break
            elif not isinstance(message, Started):
                break
        yield "[DONE]"
    finally:
        job.cancel()  # the client went away (or we are done): stop generating


def _stream_error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, EdgespecError):
        return errors.from_edgespec(exc).body()
    return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").body()
