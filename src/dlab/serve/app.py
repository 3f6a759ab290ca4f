"""The HTTP API of `dlab serve` (FastAPI), and the page at / to try the model in a browser.

    GET  /            a page: draw a digit or type a text, see the class probabilities
    GET  /health      liveness
    GET  /metadata    task, classes, input shape, recipe summary
    GET  /metrics     Prometheus text: requests by route and status, latency, batch sizes
    POST /predict     {"inputs": one input or a batch}, {"text": "..."} / {"texts": [...]}, or an uploaded image
    POST /generate    {"prompt": ..., "max_new_tokens": ...} (language models) or {"text": ...} (translation)
    POST /recommend   {"user": ..., "k": 10} (recommenders; see dlab.serve.recommend)

Every malformed request gets a 4xx with a message; nothing a request says can make the server
load another model or touch a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from functools import partial
from importlib import resources
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dlab.data.inputs import accepted_shapes, from_array, from_image_bytes, from_wav
from dlab.errors import DlabError, InputError
from dlab.serve import schema
from dlab.serve.backends import describe
from dlab.serve.batching import MicroBatcher
from dlab.serve.meters import Meters
from dlab.tasks import Task, task_of

logger = logging.getLogger("dlab.serve")

MAX_INPUTS = 256  # per request
MAX_TEXT = 10_000  # characters
MAX_NEW_TOKENS = 1_000
OPEN_PATHS = {"/", "/health"}  # the page itself and liveness need no token
ROUTES = {
    "predict": "/predict",
    "generate": "/generate",
    "translate": "/generate",
    "recommend": "/recommend",
}
KNOWN_PATHS = {"/", "/health", "/metadata", "/metrics", "/predict", "/generate", "/docs"}
KNOWN_PATHS |= {"/openapi.json", "/recommend", "/users"}  # the rest count as "other"


class ClientError(Exception):
    """A request the server refuses: status code, message, and headers (e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status, headers=self.headers)


class Worker:
    """Long model work (generation, beam search) in one thread beside the event loop, so
    /health and the rest keep answering: at most `queue` requests wait (more get 503 with
    Retry-After), and a request that waits and runs longer than `timeout_s` gets 504."""

    def __init__(self, queue: int = 8, timeout_s: float = 120.0):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlab-generate")
        self.queue, self.timeout_s, self.pending = queue, timeout_s, 0

    async def run(self, fn: Any, *args: Any) -> Any:
        if self.pending >= self.queue:
            raise ClientError(
                503, f"busy: {self.pending} generations queued; retry shortly", {"Retry-After": "1"}
            )
        self.pending += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise ClientError(504, f"generation took over {self.timeout_s:g} s") from None
        finally:
            self.pending -= 1


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413, declared or streamed."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(self.limit, send)
        received = 0

        async def counting() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise ClientError(413, f"request body over the {self.limit // 1_000_000} MB limit")
            return message

        try:
            await self.app(scope, counting, send)
        except Exception as exc:
            refused = _client_error_in(exc)
            if refused is None:
                raise
            await _too_large(self.limit, send, refused.message)


def _client_error_in(exc: BaseException) -> ClientError | None:
    """The ClientError that `exc` is, or that an exception group raised by the framework's
    task groups holds."""
    if isinstance(exc, ClientError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _client_error_in(inner)
        if found is not None:
            return found
    return None


async def _too_large(limit: int, send: Any, message: str | None = None) -> None:
    body = json.dumps(
        {"error": message or f"request body over the {limit // 1_000_000} MB limit"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _routes_of(task: Task) -> str:
    """Which route a model of `task` answers instead, for a 404 that helps."""
    routes = [ROUTES[v] for v in task.verbs]
    what = task.name.replace("_", " ")
    return f"this {what} model answers {' and '.join(routes) if routes else 'no inference route'}"


def create_app(
    backend: Any,
    token: str | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    cors: list[str] | None = None,
    max_body_mb: float = 8.0,
    allowed_hosts: list[str] | None = None,
    worker: Worker | None = None,
) -> Any:
    """The ASGI application serving `backend` (`worker`: generation's thread and queue;
    `allowed_hosts`: the Host names accepted, against DNS rebinding)."""
    meters = Meters()
    task = task_of(backend.meta)
    batcher = _batcher(backend, task, max_batch, max_wait_ms, meters)
    worker = worker or Worker()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if batcher is not None:
            batcher.close()
        worker.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="dlab serve", version="1", docs_url="/docs", redoc_url=None, lifespan=lifespan
    )
    _guard(app, meters, token)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (
            resources.files("dlab.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        )

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metadata", responses=schema.errors())
    async def metadata() -> dict:
        return describe(backend)

    @app.get("/metrics", response_class=PlainTextResponse, responses=schema.errors())
    async def metrics() -> Response:
        return Response(generate_latest(meters.registry), media_type=CONTENT_TYPE_LATEST)

    _inference_routes(app, backend, task, batcher, worker)
    _browser_rules(app, allowed_hosts, cors)
    return BodyLimit(app, int(max_body_mb * 1_000_000)) if max_body_mb else app


def _browser_rules(app: FastAPI, allowed_hosts: list[str] | None, cors: list[str] | None) -> None:
    """Which Host names requests may use (DNS rebinding), and which origins may call (CORS)."""
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
        )


def _batcher(
    backend: Any, task: Task, max_batch: int, max_wait_ms: float, meters: Meters
) -> MicroBatcher | None:
    """Shared forward passes for /predict (None when the model answers no predict)."""
    if "predict" not in task.verbs or "recommend" in task.verbs:
        return None
    observe, pad_id = meters.batch_sizes.observe, _pad_id(backend)
    return MicroBatcher(backend.outputs, max_batch, max_wait_ms, on_batch=observe, pad_id=pad_id)


def _pad_id(backend: Any) -> int | None:
    """The id text requests are padded with (token models), else None."""
    tokenizer = getattr(backend, "tokenizer", None)
    if backend.meta.input_kind != "tokens" or tokenizer is None:
        return None
    return tokenizer.pad_id or 0


def _guard(app: FastAPI, meters: Meters, token: str | None) -> None:
    """The token check (constant time), per-route counts and latency, and errors as JSON."""
    expected_token = token.encode() if token else None

    @app.middleware("http")
    async def guard_and_measure(request: Request, call_next: Any) -> Any:
        route = request.url.path if request.url.path in KNOWN_PATHS else "other"
        started = time.perf_counter()
        if expected_token is not None and request.url.path not in OPEN_PATHS:
            scheme, _, given_text = request.headers.get("authorization", "").partition(" ")
            # RFC 7235: the scheme is case-insensitive; only `Bearer <token>` is accepted
            given = given_text.strip().encode() if scheme.lower() == "bearer" else b""
            if not hmac.compare_digest(given, expected_token):  # constant time: no timing oracle
                response: Any = JSONResponse(
                    {"error": "missing or wrong token: send Authorization: Bearer <token>"},
                    status_code=401,
                )
                meters.requests.labels(route, "401").inc()
                return response
        try:
            response = await call_next(request)
        except ClientError as exc:
            response = exc.response()
        except Exception as exc:
            refused = _client_error_in(exc)  # e.g. a streamed body over the limit, in a group
            if refused is not None:
                response = refused.response()
            else:  # a bug, not the client's fault: a 500 that is counted and logged
                logger.exception("%s %s failed", request.method, request.url.path)
                response = JSONResponse(
                    {"error": "internal error: the server's log has the details"}, status_code=500
                )
        meters.requests.labels(route, str(response.status_code)).inc()
        meters.latency.labels(route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(DlabError)
    async def dlab_error(request: Request, exc: DlabError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)


def _inference_routes(app: FastAPI, backend: Any, task: Task, batcher: Any, worker: Worker) -> None:
    """/predict (micro-batched; the task answers) and /generate (language and translation)."""
    meta = backend.meta
    rate = None
    if "recommend" in task.verbs:
        from dlab.serve.recommend import recommend_routes

        rate = recommend_routes(app, backend, worker, ClientError, _json)

    @app.post(
        "/predict",
        responses=schema.errors(400, 404, 415, 422, 503),
        openapi_extra=schema.body(schema.PREDICT, upload=True),
    )
    async def predict(request: Request) -> dict:
        if rate is not None:  # a recommender: {"user": ..., "item": ...}
            return await rate(request)
        if batcher is None:
            raise ClientError(404, f"/predict is for classifiers; {_routes_of(task)}")
        batch, sources = await _inputs(request, backend)
        outputs = await batcher.submit(batch)
        answers = task.answer(torch.from_numpy(outputs), meta)
        return {"predictions": _rounded(answers), "inputs": sources}

    @app.post(
        "/generate",
        responses=schema.errors(400, 404, 415, 422, 503, 504),
        openapi_extra=schema.body(schema.GENERATE),
    )
    async def generate(request: Request) -> dict:
        body = await _json(request)
        if "translate" in task.verbs:
            text = _text(body.get("text"), "text")
            beam = _integer(body, "beam", 4, 1, 16)
            return {"translation": await worker.run(backend.translate, text, beam)}
        if "generate" not in task.verbs:
            raise ClientError(
                404, f"/generate is for language and translation models; {_routes_of(task)}"
            )
        prompt = body.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_TEXT):
            raise ClientError(422, f"prompt should be a string of at most {MAX_TEXT:,} characters")
        temperature = _number(body, "temperature", 0.8, 0.0, 10.0)
        top_p = body.get("top_p")
        if top_p is not None:
            top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
        top_k = _integer(body, "top_k", None, 1, 100_000) if body.get("top_k") is not None else None
        seed = _integer(body, "seed", None, 0, 2**31 - 1) if body.get("seed") is not None else None
        tokens = _integer(body, "max_new_tokens", 200, 1, MAX_NEW_TOKENS)
        text = await worker.run(backend.generate, prompt, tokens, temperature, top_k, top_p, seed)
        return {"prompt": prompt, "text": text}


def _rounded(value: Any) -> Any:
    """Floats to 6 digits, in nested answers: what a client needs, and the same for an input
    whether it came alone or in a batch (whose kernels sum in another order)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


async def _json(request: Request) -> dict:
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/json":
        raise ClientError(415, f"send application/json (got {kind or 'no content type'})")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:  # also integers of over 4,300 digits
        raise ClientError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ClientError(400, "malformed JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise ClientError(422, 'the JSON body should be an object, e.g. {"inputs": [...]}')
    return body


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ClientError(422, f"{field}: give a non-empty string")
    if len(value) > MAX_TEXT:
        raise ClientError(413, f"{field}: {len(value):,} characters is over the {MAX_TEXT:,} limit")
    return value


def _number(body: dict, field: str, default: float, low: float, high: float) -> float:
    value = body.get(field, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ClientError(
            422, f"{field}: should be a number in [{low:g}, {high:g}] (got {value!r})"
        )
    return float(value)


def _integer(body: dict, field: str, default: int | None, low: int, high: int) -> Any:
    value = body.get(field, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ClientError(422, f"{field}: should be an integer in [{low}, {high}] (got {value!r})")
    return value


async def _upload(request: Request, meta: Any) -> tuple[torch.Tensor, list[str]]:
    """An uploaded image (image models) or WAV clip (sound models), as a batch of one."""
    hears = meta.audio is not None
    if meta.input_kind != "image" and not hears:
        raise ClientError(
            415,
            f"this model takes {meta.input_kind}; upload files only to image or sound models",
        )
    what = "WAV clip" if hears else "image"
    form = await request.form()
    upload = form.get("file")
    if upload is None or not hasattr(upload, "read"):
        raise ClientError(422, f"upload the {what} in a form field named 'file'")
    data, name = await upload.read(), upload.filename or "upload"
    try:
        # decoding (and a sound's features) run off the event loop
        decode = from_wav if hears else partial(from_image_bytes, resize=True)
        tensor = await asyncio.to_thread(decode, data, meta, name)
    except InputError as exc:
        raise ClientError(422, str(exc)) from None
    return tensor[None], [name]


async def _inputs(request: Request, backend: Any) -> tuple[torch.Tensor, list[str]]:
    """(batch tensor, a label per input) from JSON arrays, JSON texts, or an uploaded image."""
    meta = backend.meta
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "multipart/form-data":
        return await _upload(request, meta)
    body = await _json(request)
    if meta.input_kind == "tokens":
        texts = body.get("texts", [body.get("text")] if "text" in body else None)
        if not isinstance(texts, list) or not texts:
            raise ClientError(
                422, 'send {"text": "..."} or {"texts": ["...", ...]} to a text model'
            )
        if len(texts) > MAX_INPUTS:
            raise ClientError(413, f"{len(texts)} texts is over the {MAX_INPUTS} per request limit")
        texts = [_text(t, "text") for t in texts]
        return backend.run._encode_texts(texts), [t[:60] for t in texts]
    if "inputs" not in body:
        raise ClientError(
            422,
            'send {"inputs": [...]}: one input shaped like '
            + " or ".join(str(s) for s in accepted_shapes(tuple(meta.input_shape)))
            + ", or a list of them",
        )
    try:
        array = np.asarray(body["inputs"], dtype=np.float64)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ClientError(
            422, "inputs: a (nested) list of numbers with the same length in each dimension"
        ) from None
    shapes = accepted_shapes(tuple(meta.input_shape))
    single = tuple(array.shape) in shapes
    if not single and not (array.ndim >= 2 and tuple(array.shape[1:]) in shapes):
        raise ClientError(
            422,
            f"inputs: shape {tuple(array.shape)} fits neither one input {' or '.join(map(str, shapes))} nor a batch of them",
        )
    rows = [array] if single else list(array)
    if len(rows) > MAX_INPUTS:
        raise ClientError(413, f"{len(rows)} inputs is over the {MAX_INPUTS} per request limit")
    try:
        tensors = [from_array(row, meta, f"inputs[{i}]") for i, row in enumerate(rows)]
    except InputError as exc:
        raise ClientError(422, str(exc)) from None
    return torch.stack(tensors), [f"#{i}" for i in range(len(rows))]
