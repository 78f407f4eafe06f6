"""The local endpoint as a process: ``serve_forever`` in the foreground, ``LocalServer`` as a child.

The child is ``python -m phi3lab.serving ARGS``, which parses ARGS with the ``phi3lab serve``
command line, so a notebook's server and a terminal's server accept the same options. The
child runs in its own session and watches its parent: when the parent is gone (a restarted or
killed Jupyter kernel) it exits, so no orphan server is left behind.

Each child started here leaves a record (``server-PORT.json``) and a log (``server-PORT.log``)
in ``phi3lab.runs.server_dir()``; ``server_records`` and ``server_logs`` list them for cleanup.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import Phi3LabError
from ..runs import server_dir
from ..secrets import mask_secrets

# What a server child's command line contains: how cleanup tells it from another process with a reused pid.
SERVER_MODULE = "phi3lab.serving"
# The server's API key: read by ``phi3lab serve`` and handed to ``LocalServer``'s child, never put in its
# command line (which every user of the machine can read).
API_KEY_ENV = "PHI3LAB_API_KEY"


class ServerError(Phi3LabError):
    """The local server could not start, answer its health check, or stop."""


# ----- in the foreground ------------------------------------------------------------------------
def cpu_threads() -> int:
    """Half the CPU cores (at least one) for generation on CPU.

    The server shares the machine with the notebook kernel and the clients. On an oversubscribed
    2-core machine, two PyTorch threads made a 16-token reply of the stand-in 5-10x slower than one
    thread (their parallel regions wait for each other), so the server leaves room instead.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (a host name other than localhost is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond loopback without an API key: anyone on the network could use the machine."""
    if not is_loopback(host) and not api_key:
        raise ServerError(f"serving on {host} reaches beyond this machine, so it needs an API key. Fix: set "
                          f"{API_KEY_ENV} (or pass --api-key), or serve on 127.0.0.1")


def serve_forever(host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
                  adapter: str | os.PathLike | None = None, merge: bool = False, parent_pid: int | None = None,
                  log_level: str = "warning", threads: int | None = None, api_key: str | None = None,
                  onnx: str | os.PathLike | None = None) -> None:
    """Load the model and serve until Ctrl+C (or until ``parent_pid`` exits); see ``check_exposure``.

    ``onnx``: an export folder (``phi3lab export``), served with ONNX Runtime GenAI instead of PyTorch."""
    import torch
    import uvicorn

    from .app import build_app, load_for_serving

    check_exposure(host, api_key)
    torch.set_num_threads(threads or cpu_threads())
    if onnx:
        from .onnx_backend import OnnxBatchingGenerator, load_onnx_for_serving

        model, name, info = load_onnx_for_serving(onnx, threads or cpu_threads())
        app = build_app(model, model.tokenizer, name, info, api_key=api_key, generator=OnnxBatchingGenerator(model))
    else:
        model, tokenizer, name, info = load_for_serving(model_name, adapter, merge)
        app = build_app(model, tokenizer, name, info, api_key=api_key)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
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


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# ----- records of running children --------------------------------------------------------------
def record_file(port: int) -> Path:
    return server_dir() / f"server-{port}.json"


def log_file(port: int) -> Path:
    return server_dir() / f"server-{port}.log"


@dataclass(frozen=True)
class ServerRecord:
    """What a started child left behind; ``pid`` is None when the record cannot be read."""

    path: Path
    pid: int | None = None
    url: str | None = None

    @property
    def alive(self) -> bool:
        """The recorded pid runs a phi3lab server (a reused pid belongs to someone else's process)."""
        import psutil

        if self.pid is None:
            return False
        try:
            return SERVER_MODULE in " ".join(psutil.Process(self.pid).cmdline())
        except (OSError, psutil.Error):
            return False


def server_records() -> list[ServerRecord]:
    """The records of servers started by ``LocalServer`` (running or not), in file-name order."""
    records = []
    for path in sorted(server_dir().glob("server-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records.append(ServerRecord(path, int(data["pid"]), data.get("url")))
        except (ValueError, KeyError, TypeError, OSError):
            records.append(ServerRecord(path))
    return records


def server_logs() -> list[Path]:
    return sorted(server_dir().glob("server-*.log"))


# ----- as a child process -----------------------------------------------------------------------
_RUNNING: set[LocalServer] = set()


class LocalServer:
    """The local endpoint in a child process: ``start()``, ``url``, ``health()``, ``stop()``; a context manager.

    ``adapter="auto"`` serves the latest finished training run's adapter (the base model when there
    is none); ``adapter=None`` the base model; a folder that adapter. ``onnx``: an export folder
    (``phi3lab export``) served with ONNX Runtime GenAI instead. ``api_key``: clients must send it
    (``LocalEndpoint(url, api_key=...)``); required for a ``host`` beyond loopback.
    """

    def __init__(self, model_name: str | None = None, adapter: str | os.PathLike | None = "auto",
                 merge: bool = False, host: str = "127.0.0.1", port: int | None = None,
                 startup_timeout: float = 180.0, api_key: str | None = None, onnx: str | os.PathLike | None = None):
        from .app import default_adapter

        check_exposure(host, api_key)
        self.api_key = api_key
        self.model_name = model_name
        self.onnx = onnx
        self.adapter = None if onnx else default_adapter() if adapter == "auto" else adapter
        self.merge, self.host, self.port = merge, host, port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.record_path: Path | None = None  # fixed at start, so PHI3LAB_RUNS changed later cannot orphan it

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        """The child's command line: ``phi3lab serve``'s options, run as ``python -m phi3lab.serving``."""
        command = [sys.executable, "-m", SERVER_MODULE, "--host", self.host, "--port", str(self.port),
                   "--parent-pid", str(os.getpid())]
        if self.model_name:
            command += ["--model", self.model_name]
        if self.onnx:
            command += ["--onnx", str(self.onnx)]
        elif self.adapter:
            command += ["--adapter", str(self.adapter)] + (["--merge"] if self.merge else [])
        else:
            command.append("--base")  # never let the child pick an adapter the caller did not ask for
        return command

    def child_env(self) -> dict[str, str]:
        """The child's environment: the key only as asked (one left in the notebook's must not lock it out)."""
        env = {name: value for name, value in os.environ.items() if name != API_KEY_ENV}
        return {**env, "PYTHONUNBUFFERED": "1", **({API_KEY_ENV: self.api_key} if self.api_key else {})}

    def start(self) -> LocalServer:
        if self.running:
            return self
        self.port = self.port or free_port(self.host)
        self.log_path, self.record_path = log_file(self.port), record_file(self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # A new session: Ctrl+C / kernel interrupts aimed at the parent do not reach the server.
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, env=self.child_env())
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
        """The last lines of the server's log, masked (they end up in error messages)."""
        if not self.log_path or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return mask_secrets("\n".join(text.splitlines()[-lines:]))

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
        if self.record_path:
            self.record_path.unlink(missing_ok=True)

    def _write_record(self) -> None:
        from ..io import atomic_write_json

        atomic_write_json(self.record_path,
                          {"pid": self.process.pid, "port": self.port, "url": self.url, "parent_pid": os.getpid(),
                           "started": time.time(), "adapter": str(self.adapter) if self.adapter else None})

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        serving = f"onnx={self.onnx}" if self.onnx else f"adapter={self.adapter or 'none (base model)'}"
        return f"LocalServer({self.url}, {state}, {serving})"


def start_local_server(model_name: str | None = None, adapter: str | os.PathLike | None = "auto",
                       merge: bool = False, port: int | None = None, startup_timeout: float = 180.0,
                       api_key: str | None = None, onnx: str | os.PathLike | None = None) -> LocalServer:
    """Start the local endpoint (the latest trained adapter when one exists, or the ONNX export in ``onnx``)
    and wait until it is healthy."""
    return LocalServer(model_name, adapter, merge, port=port, startup_timeout=startup_timeout, api_key=api_key,
                       onnx=onnx).start()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(timeout=5.0)
