"""The OpenAI-compatible app: request schema, the batching generator, the three routes, what to serve.

Why a small FastAPI app and not ``transformers serve``: in transformers 5.23 that server needs the
extra ``openai`` package, loads models by hub id or hub-cache name, and has no way to attach a PEFT
adapter, so serving the course's adapter would need a merged copy written to disk first. This app
loads exactly what the course trained (``phi3lab.training.load_trained``), answers the three routes
the course uses, and runs on uvicorn (started by ``phi3lab.serving.process``).

Concurrency: one worker thread owns the model (PyTorch modules are not safe to call from several
threads at once). Requests wait in a queue; each time the worker is free it takes the waiting requests with
the same sampling settings (up to 8, gathering for at most 20 ms) and generates them as one
left-padded batch, so concurrent clients share forward passes instead of queueing one by one.
Tokenising runs on one more thread, so a long prompt never holds the event loop (and ``/health``).
``stream: true`` sends the reply as it is generated (``phi3lab.serving.streaming``); the ONNX Runtime
GenAI backend (``phi3lab.serving.onnx_backend``) plugs in its own generator behind the same routes.

Hostile input: ``RequestGuard`` refuses bodies over ``MAX_BODY_BYTES`` before they are read whole and
checks the optional API key; the schema refuses text that is not valid Unicode and temperatures too
small to sample with; prompts longer than the context could hold are refused before tokenising.
Every error, a 500 included, is an OpenAI-shaped JSON body.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ..generation import stop_token_ids
from ..secrets import mask_secrets
from .streaming import TokenDispatcher, stream_response

MAX_TOKENS_LIMIT = 1024
# Starlette reads a whole body into memory before validating it: one 10 MB body once grew the server
# by 2 GB. 2 MiB holds any prompt the character cap below lets through, JSON escapes included.
MAX_BODY_BYTES = 2 * 1024 * 1024
# Real text averages 3-5 characters per token, so a prompt with more than this many characters per
# token of context cannot fit; it is refused before the tokenizer spends time and memory on it.
CHARS_PER_CONTEXT_TOKEN = 8
# Sampling divides the logits by the temperature: 1e-300 overflows them to inf (a NaN crash). Below
# 0.01 sampling is greedy in all but name, so such values are refused and 0 means greedy.
MIN_TEMPERATURE = 0.01
OPEN_PATHS = ("/health",)  # answered without the API key: start-up checks and monitoring poll it


def _unicode_text(value: str) -> str:
    """JSON may carry lone UTF-16 surrogates (``"\\udc00"``), which no tokenizer or response can encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"holds a lone UTF-16 surrogate at character {exc.start}; send valid Unicode text") from None
    return value


UnicodeText = Annotated[str, AfterValidator(_unicode_text)]


# ----- the OpenAI chat-completions request ------------------------------------------------------
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: UnicodeText


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False  # one more chunk before [DONE] with the token counts


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat-completions request the server honours; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: UnicodeText | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(default=128, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 means greedy (deterministic)")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("temperature")
    @classmethod
    def _samplable(cls, temperature: float) -> float:
        if 0 < temperature < MIN_TEMPERATURE:
            raise ValueError(f"use 0 for greedy decoding or at least {MIN_TEMPERATURE}; smaller temperatures "
                             "overflow the sampler")
        return temperature

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user' (the model answers the user)")
        return messages


def describe_request_errors(errors: list[dict]) -> tuple[str, str]:
    """(message, param) for pydantic/FastAPI validation errors, e.g. ``messages.0.role: Input should be ...``."""
    parts, params = [], []
    for err in errors:
        if err.get("type") == "json_invalid":
            return (f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')} at "
                    f"character {err['loc'][-1]}); send an object like "
                    '{"messages": [{"role": "user", "content": "..."}]}', "body")
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        param = ".".join(loc) or "body"
        params.append(param)
        parts.append(f"{param}: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
    return "; ".join(parts), params[0] if params else "body"


class PromptError(ValueError):
    """A well-formed request the model cannot take (too long for its context); ``param`` names the field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def error_response(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                   code: str | None = None):
    """OpenAI's error shape. Surrogates are escaped, so no message can fail to encode (and become a plain 500)."""
    from starlette.responses import JSONResponse

    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": kind, "param": param, "code": code}})


class RequestGuard:
    """ASGI middleware in front of the routes: the API key, then the body-size limit.

    Both are checked before a route reads anything: a declared ``Content-Length`` over the limit is
    refused unread, and a chunked body is buffered only up to the limit.
    """

    def __init__(self, app, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
            body, refusal = await self._read_body(receive)
            if body is None and refusal is None:
                return  # the client left mid-body
            receive = _replay(body, receive)
        if refusal is not None:
            return await refusal(scope, receive, send)
        await self.app(scope, receive, send)

    def _refusal(self, scope):
        headers = dict(scope["headers"])
        if self.api_key and scope["path"] not in OPEN_PATHS and not self._authorised(headers):
            return error_response(401, "missing or wrong API key; send the header 'Authorization: Bearer <key>' "
                                       "with the key the server was started with", None, "invalid_request_error",
                                  "invalid_api_key")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return self._too_large()
        return None

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, sent = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(sent.strip(), self.api_key.encode("utf-8"))

    def _too_large(self):
        return error_response(413, f"the request body is over the server's limit of {self.max_body_bytes:,} "
                                   "bytes; send shorter messages", "messages")

    async def _read_body(self, receive) -> tuple[bytes | None, object | None]:
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return b"", self._too_large()
            more = message.get("more_body", False)
        return bytes(body), None


def _replay(body: bytes, receive):
    """A ``receive`` that hands the buffered body to the route, then waits on the client as before."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


# ----- generation -----------------------------------------------------------------------------
@dataclass
class _Job:
    request: ChatRequest
    prompt_ids: list[int]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    on_token: Callable[[int], None] | None = None  # streaming: called with each new token of the reply

    @property
    def sampling(self) -> tuple[float, float]:
        return (self.request.temperature, self.request.top_p) if self.request.temperature > 0 else (0.0, 1.0)


class BatchingGenerator:
    """Owns the model in one worker thread and answers queued requests in batches.

    It calls ``model.generate`` on token ids rather than ``phi3lab.generation.generate`` (which
    returns text only) because the response reports exact token counts and each request in a
    batch keeps its own ``max_tokens``.
    """

    def __init__(self, model, tokenizer, max_batch: int = 8, batch_window_s: float = 0.02):
        self.model, self.tokenizer, self.max_batch, self.batch_window_s = model, tokenizer, max_batch, batch_window_s
        self.context_length = getattr(model.config, "max_position_embeddings", 4096)
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.max_prompt_chars = self.context_length * CHARS_PER_CONTEXT_TOKEN
        # One thread: tokenising is CPU-bound, so more threads would only compete with generation,
        # and one thread never calls the tokenizer from two places at once.
        self._encoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="phi3lab-tokenizer")
        self._queue: queue.Queue[_Job] = queue.Queue()
        self.requests_served = self.batches_run = 0  # shown by /health: batches < requests means batching worked
        self._thread = threading.Thread(target=self._run, name="phi3lab-generator", daemon=True)
        self._thread.start()

    def encode(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids; PromptError when it cannot fit the context (checked by length first)."""
        chars = sum(len(m.content) for m in request.messages)
        if chars > self.max_prompt_chars:
            raise PromptError(f"the messages hold {chars:,} characters, more than the model's context of "
                              f"{self.context_length} tokens can take (limit {self.max_prompt_chars:,} characters); "
                              "shorten the messages", "messages")
        messages = [m.model_dump() for m in request.messages]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # transformers 5 returns a BatchEncoding
        if len(ids) + request.max_tokens > self.context_length:
            raise PromptError(f"prompt ({len(ids)} tokens) plus max_tokens ({request.max_tokens}) exceeds the "
                              f"model's context of {self.context_length} tokens; shorten the messages or lower "
                              "max_tokens", "max_tokens")
        return list(ids)

    async def encode_off_loop(self, request: ChatRequest) -> list[int]:
        """``encode`` on the tokenizer thread, so the event loop keeps answering other requests meanwhile."""
        return await asyncio.wrap_future(self._encoder.submit(self.encode, request))

    def submit(self, request: ChatRequest, prompt_ids: list[int],
               on_token: Callable[[int], None] | None = None) -> concurrent.futures.Future:
        job = _Job(request, prompt_ids, on_token=on_token)
        self._queue.put(job)
        return job.future

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:  # a daemon thread: it ends with the process
            first = self._queue.get()
            batch, later = [first], []
            # Clients whose previous answers just arrived resend within milliseconds; a short window
            # lets them join this batch instead of waiting a whole generation for the next one.
            deadline = time.monotonic() + self.batch_window_s
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                (batch if job.sampling == first.sampling else later).append(job)
            for job in later:
                self._queue.put(job)
            try:
                results = self._generate(batch)
            except Exception as exc:  # one failed batch must not stop the server
                for job in batch:
                    job.future.set_exception(exc)
                continue
            self.batches_run += 1
            self.requests_served += len(batch)
            for job, result in zip(batch, results, strict=True):
                job.future.set_result(result)

    def _generate(self, batch: list[_Job]) -> list[dict]:
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(job.prompt_ids) for job in batch)
        # Left padding: every prompt ends at the same position, where generation starts.
        input_ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in batch])
        attention = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in batch])
        temperature, top_p = batch[0].sampling
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        device = next(self.model.parameters()).device
        streamer = TokenDispatcher(batch, self.stop_ids) if any(j.on_token for j in batch) else None
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), pad_token_id=pad,
                eos_token_id=self.stop_ids, max_new_tokens=max(j.request.max_tokens for j in batch),
                streamer=streamer, **sampling)
        return [self._answer(job, output[row, width:].tolist()) for row, job in enumerate(batch)]

    def _answer(self, job: _Job, new_ids: list[int]) -> dict:
        # The batch ran to its longest max_tokens; cut each answer at its own stop token or limit.
        limit = job.request.max_tokens
        kept, finish = [], "length"
        for token in new_ids[:limit]:
            if token in self.stop_ids:
                kept.append(token)
                finish = "stop"
                break
            kept.append(token)
        text = self.tokenizer.decode([t for t in kept if t not in self.stop_ids and t != self.tokenizer.pad_token_id],
                                     skip_special_tokens=True)
        return {"text": text.strip(), "finish_reason": finish,
                "prompt_tokens": len(job.prompt_ids), "completion_tokens": len(kept)}


# ----- the ASGI app ---------------------------------------------------------------------------
def build_app(model, tokenizer, served_name: str, info: dict | None = None, max_batch: int = 8,
              api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
              generator: BatchingGenerator | None = None):
    """A FastAPI app with ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /health``.

    With ``api_key``, every route but ``/health`` needs ``Authorization: Bearer <api_key>``. ``generator``
    serves another backend (``onnx_backend.OnnxBatchingGenerator``); by default PyTorch generates with ``model``.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    generator = generator or BatchingGenerator(model, tokenizer, max_batch=max_batch)
    app = FastAPI(title="phi3lab local endpoint", version="1")
    app.add_middleware(RequestGuard, api_key=api_key, max_body_bytes=max_body_bytes)
    app.state.generator = generator
    started = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = describe_request_errors(exc.errors())
        return error_response(400, message, param)

    @app.exception_handler(HTTPException)  # unknown path, wrong method, a body FastAPI cannot decode
    async def _http(request: Request, exc: HTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(exc.status_code, str(exc.detail), None, kind)

    @app.exception_handler(Exception)  # a bug must still answer in the shape clients parse
    async def _crash(request: Request, exc: Exception):
        return error_response(500, mask_secrets(f"internal error: {type(exc).__name__}: {exc}"), None, "server_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served_name, "waiting": generator.waiting,
                "requests_served": generator.requests_served, "batches_run": generator.batches_run, **(info or {})}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served_name, "object": "model", "created": started,
                                            "owned_by": "phi3lab"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        if body.model not in (None, "", served_name):
            return error_response(404, f"model '{body.model}' is not served here; this server serves "
                                       f"'{served_name}' (leave 'model' out or use that name)", "model",
                                  "model_not_found")
        try:
            prompt_ids = await generator.encode_off_loop(body)
        except PromptError as exc:
            return error_response(400, str(exc), exc.param)
        if body.stream:
            return stream_response(generator, body, prompt_ids, served_name)
        try:
            result = await asyncio.wrap_future(generator.submit(body, prompt_ids))
        except Exception as exc:
            return error_response(500, mask_secrets(f"generation failed: {type(exc).__name__}: {exc}"), None,
                                  "server_error")
        usage = {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"],
                 "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": served_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                             "finish_reason": result["finish_reason"]}],
                "usage": usage}

    return app


# ----- what to serve --------------------------------------------------------------------------
def default_adapter() -> Path | None:
    """The adapter of the latest finished training run (``phi3lab.runs.latest_run``), or None when there is none yet."""
    from ..runs import latest_run

    run = latest_run()
    return run.adapter_dir if run else None


def load_for_serving(model_name: str | None = None, adapter: str | os.PathLike | None = None, merge: bool = False):
    """(model, tokenizer, served name, info): the adapter on its base model when given, else the base model."""
    from ..models import default_model_name, load_model, load_tokenizer

    if adapter:
        from ..training import load_trained

        adapter = Path(adapter)
        model, tokenizer = load_trained(adapter, merge=merge)
        name = f"{adapter.parent.name}-{adapter.name}"
    else:
        model_name = model_name or default_model_name()
        model, tokenizer = load_model(model_name), load_tokenizer(model_name)
        name = model_name
    model.eval()
    info = {"adapter": str(adapter) if adapter else None, "merged": bool(adapter and merge),
            "device": str(next(model.parameters()).device)}
    return model, tokenizer, name, info
