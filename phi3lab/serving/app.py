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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..generation import stop_token_ids
from ..secrets import mask_secrets

MAX_TOKENS_LIMIT = 1024


# ----- the OpenAI chat-completions request ------------------------------------------------------
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat-completions request the server honours; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(default=128, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 means greedy (deterministic)")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    stream: bool = False

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user' (the model answers the user)")
        return messages

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, stream: bool) -> bool:
        if stream:
            raise ValueError("streaming is not supported by the course server; send stream=false")
        return stream


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
        parts.append(f"{param}: {err.get('msg', 'invalid')}")
    return "; ".join(parts), params[0] if params else "body"


# ----- generation -----------------------------------------------------------------------------
@dataclass
class _Job:
    request: ChatRequest
    prompt_ids: list[int]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

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
        self._queue: queue.Queue[_Job] = queue.Queue()
        self.requests_served = self.batches_run = 0  # shown by /health: batches < requests means batching worked
        self._thread = threading.Thread(target=self._run, name="phi3lab-generator", daemon=True)
        self._thread.start()

    def encode(self, request: ChatRequest) -> list[int]:
        messages = [m.model_dump() for m in request.messages]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # transformers 5 returns a BatchEncoding
        if len(ids) + request.max_tokens > self.context_length:
            raise ValueError(f"prompt ({len(ids)} tokens) plus max_tokens ({request.max_tokens}) exceeds the "
                             f"model's context of {self.context_length} tokens; shorten the messages or lower max_tokens")
        return list(ids)

    def submit(self, request: ChatRequest, prompt_ids: list[int]) -> concurrent.futures.Future:
        job = _Job(request, prompt_ids)
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
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), pad_token_id=pad,
                eos_token_id=self.stop_ids, max_new_tokens=max(j.request.max_tokens for j in batch), **sampling)
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
def build_app(model, tokenizer, served_name: str, info: dict | None = None, max_batch: int = 8):
    """A FastAPI app with ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /health``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    generator = BatchingGenerator(model, tokenizer, max_batch=max_batch)
    app = FastAPI(title="phi3lab local endpoint", version="1")
    app.state.generator = generator
    started = int(time.time())

    def error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "param": param}})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = describe_request_errors(exc.errors())
        return error(400, message, param)

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
            return error(404, f"model '{body.model}' is not served here; this server serves '{served_name}' "
                              "(leave 'model' out or use that name)", "model", "model_not_found")
        try:
            prompt_ids = generator.encode(body)
        except ValueError as exc:
            return error(400, str(exc), "max_tokens")
        try:
            result = await asyncio.wrap_future(generator.submit(body, prompt_ids))
        except Exception as exc:
            return error(500, mask_secrets(f"generation failed: {type(exc).__name__}: {exc}"), None, "server_error")
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
