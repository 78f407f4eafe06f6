"""Serve a model (base, or base plus LoRA adapter) behind an OpenAI-compatible endpoint on localhost.

Why a small FastAPI app and not ``transformers serve``: in transformers 5.23 that server needs the
extra ``openai`` package, loads models by hub id or hub-cache name, and has no way to attach a PEFT
adapter, so serving the course's adapter would need a merged copy written to disk first. This app
loads exactly what the course trained (``phi3lab.training.load_trained``), answers the three routes
the course uses, and runs on uvicorn.

Concurrency: one worker thread owns the model (PyTorch modules are not safe to call from several
threads at once). Requests wait in a queue; each time the worker is free it takes the waiting requests with
the same sampling settings (up to 8, gathering for at most 20 ms) and generates them as one
left-padded batch, so concurrent clients share forward passes instead of queueing one by one.

Run it in its own process (``LocalServer`` / ``start_local_server`` from a notebook, ``phi3lab
serve`` from a shell). The child watches its parent and exits when the parent is gone, so a
restarted or killed Jupyter kernel leaves no orphan server behind.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import concurrent.futures
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import Phi3LabError
from .generation import stop_token_ids
from .paths import RUNS_DIR

DEFAULT_ADAPTER = RUNS_DIR / "lora" / "adapter"
SERVER_DIR = RUNS_DIR / "serving"  # one JSON record per running server (for cleanup) and its log
MAX_TOKENS_LIMIT = 1024


class ServerError(Phi3LabError):
    """The local server could not start, answer its health check, or stop."""


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
            return error(500, f"generation failed: {type(exc).__name__}: {exc}", None, "server_error")
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
    """The adapter notebook 02 saved (``runs/lora/adapter``), or None when there is none yet."""
    return DEFAULT_ADAPTER if (DEFAULT_ADAPTER / "adapter_config.json").is_file() else None


def load_for_serving(model_name: str | None = None, adapter: str | os.PathLike | None = None, merge: bool = False):
    """(model, tokenizer, served name, info): the adapter on its base model when given, else the base model."""
    from .models import default_model_name, load_model, load_tokenizer

    if adapter:
        from .training import load_trained

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


def cpu_threads() -> int:
    """Half the CPU cores (at least one) for generation on CPU.

    The server shares the machine with the notebook kernel and the clients. On an oversubscribed
    2-core machine, two PyTorch threads made a 16-token reply of the stand-in 5-10x slower than one
    thread (their parallel regions wait for each other), so the server leaves room instead.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def serve_forever(host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
                  adapter: str | os.PathLike | None = None, merge: bool = False, parent_pid: int | None = None,
                  log_level: str = "warning", threads: int | None = None) -> None:
    """Load the model and serve until Ctrl+C (or until ``parent_pid`` exits)."""
    import torch
    import uvicorn

    torch.set_num_threads(threads or cpu_threads())
    model, tokenizer, name, info = load_for_serving(model_name, adapter, merge)
    server = uvicorn.Server(uvicorn.Config(build_app(model, tokenizer, name, info), host=host, port=port,
                                           log_level=log_level, timeout_graceful_shutdown=5,
                                           lifespan="off"))  # no startup/shutdown hooks; Ctrl+C stays quiet
    if parent_pid:
        threading.Thread(target=_exit_with_parent, args=(server, parent_pid), daemon=True).start()
    server.run()


def _exit_with_parent(server, parent_pid: int, every: float = 0.5) -> None:
    # When the parent dies this process is re-parented, so getppid() changes; then shut down.
    while os.getppid() == parent_pid:
        time.sleep(every)
    server.should_exit = True
    time.sleep(10)
    os._exit(0)  # graceful shutdown stuck (e.g. a long generation): leave anyway


# ----- the server as a child process ------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_RUNNING: set[LocalServer] = set()


class LocalServer:
    """The local endpoint in a child process: ``start()``, ``url``, ``health()``, ``stop()``; a context manager."""

    def __init__(self, model_name: str | None = None, adapter: str | os.PathLike | None = "auto",
                 merge: bool = False, host: str = "127.0.0.1", port: int | None = None,
                 startup_timeout: float = 180.0):
        self.model_name = model_name
        self.adapter = default_adapter() if adapter == "auto" else adapter
        self.merge, self.host, self.port = merge, host, port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> LocalServer:
        if self.running:
            return self
        self.port = self.port or free_port(self.host)
        SERVER_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = SERVER_DIR / f"server-{self.port}.log"
        command = [sys.executable, "-m", "phi3lab.serving", "--host", self.host, "--port", str(self.port),
                   "--parent-pid", str(os.getpid())]
        if self.model_name:
            command += ["--model", self.model_name]
        if self.adapter:
            command += ["--adapter", str(self.adapter)] + (["--merge"] if self.merge else [])
        with self.log_path.open("wb") as log:
            # A new session: Ctrl+C / kernel interrupts aimed at the parent do not reach the server.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _RUNNING.add(self)
        self._write_record()
        try:
            self.wait_healthy(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float) -> dict:
        """Poll ``/health`` until it answers, the process dies, or ``timeout`` seconds pass."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ServerError(f"the server exited during start-up (code {self.process.returncode}). "
                                  f"Last log lines:\n{self.log_tail()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2.0).raise_for_status().json()
            except httpx.HTTPError:
                time.sleep(0.2)
        raise ServerError(f"the server did not answer {self.url}/health within {timeout:.0f} s; "
                          f"see {self.log_path}. Last log lines:\n{self.log_tail()}")

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=5.0).raise_for_status().json()

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (graceful), then kill if it has not exited within ``timeout`` seconds. Safe to repeat."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        _RUNNING.discard(self)
        if self.port:
            (SERVER_DIR / f"server-{self.port}.json").unlink(missing_ok=True)

    def _write_record(self) -> None:
        from .io import atomic_write_json

        atomic_write_json(SERVER_DIR / f"server-{self.port}.json",
                          {"pid": self.process.pid, "port": self.port, "url": self.url, "parent_pid": os.getpid(),
                           "started": time.time(), "adapter": str(self.adapter) if self.adapter else None})

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalServer({self.url}, {state}, adapter={self.adapter or 'none (base model)'})"


def start_local_server(model_name: str | None = None, adapter: str | os.PathLike | None = "auto",
                       merge: bool = False, port: int | None = None, startup_timeout: float = 180.0) -> LocalServer:
    """Start the local endpoint (the trained adapter when one exists) and wait until it is healthy."""
    return LocalServer(model_name, adapter, merge, port=port, startup_timeout=startup_timeout).start()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(timeout=5.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phi3lab.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=None, help="catalog name of the base model")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder (e.g. runs/lora/adapter)")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into the weights (faster)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for generation (default: half the cores)")
    args = parser.parse_args(argv)
    try:
        serve_forever(args.host, args.port, args.model, args.adapter, args.merge, args.parent_pid, args.log_level,
                      args.threads)
    except Phi3LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
