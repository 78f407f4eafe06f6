"""Serve a model (base, or base plus LoRA adapter) behind an OpenAI-compatible endpoint on localhost.

Two parts: ``app`` (the request schema, the batching generator, the routes, what to serve) and
``process`` (``serve_forever`` in the foreground, ``LocalServer`` / ``start_local_server`` as a
child process, the records cleanup reads). ``phi3lab serve`` is the one command line for both.
The names below load their module on first use, so the app never imports process management
it does not need (and ``import phi3lab.serving`` stays cheap).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "app": ("BatchingGenerator", "ChatMessage", "ChatRequest", "MAX_BODY_BYTES", "MAX_TOKENS_LIMIT", "RequestGuard",
            "build_app", "default_adapter", "describe_request_errors", "error_response", "load_for_serving"),
    "process": ("API_KEY_ENV", "LocalServer", "SERVER_MODULE", "ServerError", "ServerRecord", "check_exposure",
                "cpu_threads", "free_port", "is_loopback", "serve_forever", "server_logs", "server_records",
                "start_local_server"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
