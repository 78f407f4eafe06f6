"""See the exact HTTP requests the real Azure SDK would send, without sending them.

``RecordingTransport`` is an azure-core transport: the real ``azure-ai-ml`` / ``azure-mgmt``
clients build and sign their requests as usual, then hand them here instead of to the network.
It records each one and answers from a route table of ``(method, url regex) → response``.
Dry runs use it with answers shaped like the service's; tests use it with the same table plus
failure answers. ``show_requests`` renders what was recorded with secrets masked.

``dry_run(routes, settings)`` is the one way the course builds a dry run: the recording
transport, the placeholder credential and (without settings) the placeholder settings, from
which ``ml_client()``, ``registry_client()`` or ``resource_client()`` gives the real SDK client.
``accepting(...)`` answers a PUT the way the service does, so the SDK's own response parsing runs
too. ``reads=`` lets a test answer a dry run's free reads from a fake service while every write
still stops here. ``blob_storage_through`` routes azure-ai-ml's internal blob uploads through a
transport, and ``RecordingTransport.httpx()`` serves the ``openai`` client from the same routes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx2
from azure.core.pipeline.transport import HttpTransport

from ..secrets import mask_secrets
from .settings import PLACEHOLDER_SETTINGS, AzureSettings


class DryRunCredential:
    """Signs dry-run requests with a dummy token: nothing is sent, so nothing real is needed."""

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("dry-run", 2**31 - 1)


# Headers a request shows: enough to understand it, never the Authorization header.
_SHOWN_HEADERS = ("Content-Type", "x-ms-blob-type", "x-ms-version")


@dataclass
class RecordedRequest:
    method: str
    url: str
    headers: dict
    body: object  # parsed JSON, raw bytes, or None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.url).query).items()}

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")

    def render(self) -> str:
        """``METHOD url`` then the JSON body, with subscription IDs, keys and tokens masked."""
        lines = [f"{self.method} {self.url}"]
        lines += [f"{name}: {self.headers[name]}" for name in _SHOWN_HEADERS if name in self.headers]
        if isinstance(self.body, (dict, list)):
            lines.append(json.dumps(self.body, indent=2, sort_keys=True))
        elif isinstance(self.body, (bytes, bytearray)) and self.body:  # an upload: its size and hash, not its bytes
            lines.append(f"<{len(self.body):,} bytes, sha256 {hashlib.sha256(self.body).hexdigest()}>")
        return mask_secrets("\n".join(lines))


@dataclass
class Reply:
    """What the fake service answers: status, JSON (or bytes) body, headers."""

    status: int = 200
    body: object = None
    headers: dict = field(default_factory=dict)


Responder = Callable[[RecordedRequest, "re.Match"], Reply]


class RecordingTransport(HttpTransport):
    """An azure-core transport that records requests and answers from a route table.

    ``route("PUT", r"/jobs/(?P<name>[^/?]+)", responder)``: the first route whose method matches
    and whose regex is found in the URL answers; the responder gets the recorded request and
    the match. A request no route matches gets 404 with an Azure-style error body, so a
    missing route shows up as a clear failure instead of a hang.
    """

    def __init__(self, routes: list[tuple[str, str, Responder]] | None = None):
        self.requests: list[RecordedRequest] = []
        self._routes: list[tuple[str, re.Pattern, Responder]] = []
        for method, pattern, responder in routes or []:
            self.route(method, pattern, responder)

    def route(self, method: str, pattern: str, responder: Responder | Reply) -> RecordingTransport:
        answer = responder if callable(responder) else (lambda request, match, reply=responder: reply)
        # Newer routes win, so a test can override one answer of a shared table.
        self._routes.insert(0, (method.upper(), re.compile(pattern), answer))
        return self

    def send(self, request, **kwargs):
        recorded = RecordedRequest(request.method, request.url, dict(request.headers), _parse_body(request))
        self.requests.append(recorded)
        reply = self._answer(recorded)
        return _to_response(request, reply, kwargs.get("stream", False))

    def _answer(self, recorded: RecordedRequest) -> Reply:
        for method, pattern, responder in self._routes:
            match = pattern.search(recorded.url)
            if method in (recorded.method, "*") and match:
                return responder(recorded, match)
        return Reply(404, {"error": {"code": "NotFound", "message": f"no route for {recorded.method} {recorded.path}"}})

    def httpx(self):
        """This transport as an ``httpx2`` transport, for the ``openai`` client: same routes, same record."""
        return _HttpxAdapter(self)

    def matching(self, method: str, pattern: str) -> list[RecordedRequest]:
        """Recorded requests with this method whose URL matches ``pattern``."""
        regex = re.compile(pattern)
        return [r for r in self.requests if r.method == method.upper() and regex.search(r.url)]

    # HttpTransport's abstract interface: nothing to open or close.
    def open(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass


def accepting(http_status: int = 201, resource_type: str | None = None, **properties) -> Responder:
    """A responder that accepts a PUT like the service: the body echoed with its id and name, ``properties`` set."""
    def answer(request: RecordedRequest, match) -> Reply:
        body = dict(request.body)
        body.update(id=request.path, name=request.path.rsplit("/", 1)[-1])
        if resource_type:
            body["type"] = resource_type
        body["properties"] = {**body.get("properties", {}), **properties}
        return Reply(http_status, body)

    return answer


class DryRunTransport(RecordingTransport):
    """Answers from the dry run's routes; with ``reads``, GET and HEAD come from that transport (a test's fake).

    Either way every request is recorded here and nothing that changes anything leaves.
    """

    def __init__(self, routes, reads: RecordingTransport | None = None):
        super().__init__(routes)
        self.reads = reads

    def _answer(self, recorded: RecordedRequest) -> Reply:
        if self.reads is not None and recorded.method in ("GET", "HEAD"):
            return self.reads._answer(recorded)
        return super()._answer(recorded)


@dataclass
class DryRun:
    """Real SDK clients for ``settings`` whose requests are signed with a placeholder token and recorded, never sent."""

    settings: AzureSettings
    transport: RecordingTransport

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.transport.requests

    def ml_client(self):
        """An ``azure.ai.ml.MLClient`` for the settings' project."""
        from .auth import ml_client

        # No upload progress bars: a dry run uploads nothing.
        return ml_client(self.settings, credential=DryRunCredential(), transport=self.transport, show_progress=False)

    def registry_client(self):
        """An ``MLClient`` for the ``azureml`` model registry."""
        from .auth import registry_client

        return registry_client(credential=DryRunCredential(), transport=self.transport)

    def resource_client(self):
        """An Azure Resource Manager client for the settings' subscription."""
        from azure.mgmt.resource.resources import ResourceManagementClient

        return ResourceManagementClient(DryRunCredential(), self.settings.subscription_id, transport=self.transport)


def dry_run(routes: list[tuple[str, str, Responder]], settings: AzureSettings | None = None,
            reads: RecordingTransport | None = None) -> DryRun:
    """A dry run answering from ``routes`` (free reads from ``reads`` when given), for the settings or the placeholders."""
    return DryRun(settings or PLACEHOLDER_SETTINGS, DryRunTransport(routes, reads))


_BLOB_PATCH = threading.Lock()


@contextlib.contextmanager
def blob_storage_through(transport) -> Iterator[None]:
    """Make azure-ai-ml's internal ``BlobServiceClient`` use ``transport`` (None: leave the SDK alone).

    azure-ai-ml 1.35.2 builds that client itself without a transport argument, so a dry run or a
    test would otherwise upload to the real storage account. The patch is process-wide, hence the lock.
    """
    if transport is None:
        yield
        return
    from azure.ai.ml._artifacts import _blob_storage_helper
    from azure.storage.blob import BlobServiceClient

    def through_transport(*args, **kwargs):
        return BlobServiceClient(*args, transport=transport, **kwargs)

    with _BLOB_PATCH:
        original = _blob_storage_helper.BlobServiceClient
        _blob_storage_helper.BlobServiceClient = through_transport
        try:
            yield
        finally:
            _blob_storage_helper.BlobServiceClient = original


def _parse_body(request) -> object:
    content = getattr(request, "content", None)
    if content is None:
        content = getattr(request, "data", None) or getattr(request, "body", None)
    if content is None:
        return None
    if isinstance(content, str):
        content = content.encode("utf-8")
    if hasattr(content, "read"):
        content = content.read()
    if not isinstance(content, (bytes, bytearray)):
        return content
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return bytes(content)


def _to_response(request, reply: Reply, stream: bool):
    # Reuse azure-core's own response classes over an in-memory requests.Response, so the SDK
    # sees exactly what the real RequestsTransport would hand it.
    import requests
    from azure.core.pipeline._tools import is_rest
    from azure.core.pipeline.transport import RequestsTransportResponse
    from azure.core.rest._requests_basic import RestRequestsTransportResponse

    raw = requests.Response()
    raw.status_code = reply.status
    raw.reason = _REASONS.get(reply.status, "")
    raw.url = request.url
    body = reply.body
    if isinstance(body, (dict, list)):
        content = json.dumps(body).encode()
        raw.headers["Content-Type"] = "application/json; charset=utf-8"
    else:
        content = body if isinstance(body, bytes) else (str(body).encode() if body is not None else b"")
    raw.headers.update(reply.headers)
    raw.headers["Content-Length"] = str(len(content))
    raw._content = content
    raw._content_consumed = True
    raw.raw = _BytesRaw(content)
    if is_rest(request):
        response = RestRequestsTransportResponse(request=request, internal_response=raw)
        if not stream:
            response.read()
        return response
    return RequestsTransportResponse(request, raw)


class _HttpxAdapter(httpx2.BaseTransport):
    """The ``httpx2`` face of a RecordingTransport: records the request, answers from its routes."""

    def __init__(self, recording: RecordingTransport):
        self.recording = recording

    def handle_request(self, request):
        content = request.read()
        try:
            body = json.loads(content) if content else None
        except ValueError:
            body = bytes(content)
        recorded = RecordedRequest(request.method, str(request.url), dict(request.headers), body)
        self.recording.requests.append(recorded)
        reply = self.recording._answer(recorded)
        if isinstance(reply.body, (dict, list)):
            return httpx2.Response(reply.status, json=reply.body, headers=reply.headers)
        return httpx2.Response(reply.status, content=reply.body or b"", headers=reply.headers)


class _BytesRaw:
    """The ``raw`` stream a requests.Response carries, for SDKs that download by chunks."""

    def __init__(self, content: bytes):
        import io

        self._buffer = io.BytesIO(content)

    def read(self, amount=None, **kwargs):
        return self._buffer.read(amount)

    def stream(self, chunk_size, decode_content=False):
        while chunk := self._buffer.read(chunk_size):
            yield chunk

    def close(self):
        pass


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
            429: "Too Many Requests", 500: "Internal Server Error"}


def show_requests(requests: list[RecordedRequest], title: str = "Requests that would be sent") -> str:
    """All recorded requests as one masked text block."""
    parts = [f"{title} ({len(requests)}):"]
    parts += [f"\n[{i}] {r.render()}" for i, r in enumerate(requests, 1)]
    return "\n".join(parts)


def show_request(request: RecordedRequest) -> str:
    return request.render()
