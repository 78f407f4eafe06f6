"""One way to test an endpoint, local or Azure: send prompts, time them, count tokens, load-test.

``query_endpoint(endpoint, prompts)`` is the same call for both kinds; only the endpoint object
differs. Both speak the OpenAI chat-completions API through the ``openai`` client: the local
server at ``<url>/v1``, an Azure serverless endpoint at ``<scoring URI>/v1`` with its key (the
route Microsoft documents now that ``azure-ai-inference`` is retired; ``phi3lab.azure.facts``).
Every call is appended to the course's call log (``phi3lab.monitoring``) without keys.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field

from .errors import Phi3LabError
from .generation import prompt_messages
from .monitoring import CallLog, default_log, percentile
from .secrets import mask_secrets

Prompt = str | list[dict]

# Sizes: a real workshop run, and the CI profile (PHI3LAB_PROFILE=ci) that keeps notebooks fast on 2 CPU cores.
FULL = {"max_tokens": 64, "concurrency": 8, "requests": 50, "load_max_tokens": 32}
CI = {"max_tokens": 16, "concurrency": 4, "requests": 8, "load_max_tokens": 8}
NO_KEY = "no-key"  # the openai client insists on a key; a local server started without one ignores it


def sizes() -> dict:
    from .config import is_ci_profile

    return CI if is_ci_profile() else FULL


def sample_conversations(n: int = 4, path: str | None = None) -> list[list[dict]]:
    """The first ``n`` conversations of the course's validation set (system, user, reference answer)."""
    from itertools import islice

    from .config import default_config
    from .data import read_conversations

    config = default_config()
    source = path or config.resolve(config.validation_file or config.train_file)
    return list(islice(read_conversations(source), n))


class EndpointError(Phi3LabError):
    """An endpoint could not be reached or described."""


@dataclass
class CallResult:
    """One request: what was asked, what came back, how long it took, how many tokens."""

    prompt: str
    response: str | None
    latency_s: float
    status: int | str  # HTTP status, or the exception's name when no response arrived
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    reference: str | None = None  # the dataset's answer, when the prompt came with one

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class LocalEndpoint:
    """An OpenAI-compatible endpoint, e.g. ``LocalServer.url`` (``api_key`` when the server was started with one)."""

    url: str
    name: str = "local"
    model: str | None = None
    timeout: float = 300.0
    api_key: str | None = field(default=None, repr=False)
    kind = "local"

    def client(self, concurrency: int = 1):
        # No retries: a load test must see every refusal of the local server, not hide it.
        return openai_client(f"{self.url.rstrip('/')}/v1", self.api_key or NO_KEY, self.timeout, concurrency,
                             max_retries=0)

    def send(self, client, messages: list[dict], max_tokens: int, temperature: float) -> CallResult:
        return chat(client, self.model, messages, max_tokens, temperature)


@dataclass(frozen=True)
class AzureEndpoint:
    """A serverless endpoint in Azure AI Foundry: its scoring URL and key (never shown)."""

    url: str
    key: str = field(repr=False)
    name: str = "azure"
    timeout: float = 120.0
    transport: object = field(default=None, repr=False, compare=False)  # tests pass one answering like Azure
    kind = "azure"

    def __repr__(self) -> str:
        return f"AzureEndpoint(url={self.url!r}, key='***', name={self.name!r})"

    def client(self, concurrency: int = 1):
        # The openai client's own retries honour Retry-After on 429, the endpoint's rate limit.
        return openai_client(f"{self.url.rstrip('/')}/v1", self.key, self.timeout, concurrency,
                             transport=self.transport)

    def send(self, client, messages: list[dict], max_tokens: int, temperature: float) -> CallResult:
        return chat(client, None, messages, max_tokens, temperature)


Endpoint = LocalEndpoint | AzureEndpoint


def openai_client(base_url: str, api_key: str, timeout: float, concurrency: int = 1, transport=None,
                  max_retries: int = 2):
    """An ``openai.OpenAI`` client for ``base_url`` with a connection pool sized for ``concurrency``.

    ``transport``: an ``httpx2`` transport, or a ``phi3lab.azure.dryrun.RecordingTransport`` (tests).
    """
    import httpx2
    import openai

    if transport is not None and not isinstance(transport, httpx2.BaseTransport):
        transport = transport.httpx()
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    http = httpx2.Client(timeout=timeout, limits=limits, transport=transport)
    return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                         http_client=http)


def chat(client, model: str | None, messages: list[dict], max_tokens: int, temperature: float) -> CallResult:
    """One chat completion through the openai client, as a CallResult (a refusal is a result, not an exception)."""
    import openai

    start = time.perf_counter()
    try:
        reply = client.chat.completions.create(model=model or openai.omit, messages=messages,
                                               max_tokens=max_tokens, temperature=temperature)
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        return _failed(messages, start, exc.status_code, str(body.get("message") or exc.message))
    except openai.APIError as exc:  # no answer at all: named after the transport's error (ConnectError, ReadTimeout)
        return _failed(messages, start, type(exc.__cause__ or exc).__name__, str(exc))
    usage = reply.usage
    return CallResult(_last_user(messages), reply.choices[0].message.content, time.perf_counter() - start, 200,
                      usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None)


def _last_user(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def _failed(messages: list[dict], start: float, status, error: str) -> CallResult:
    return CallResult(_last_user(messages), None, time.perf_counter() - start, status, error=mask_secrets(error)[:500])


def as_messages(prompt: Prompt, system: str | None = None) -> list[dict]:
    """A user prompt (optionally after a system prompt), or a ready conversation, as chat messages."""
    if isinstance(prompt, str):
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and {"role", "content"} <= m.keys()
                                                   for m in prompt):
        return prompt_messages(prompt)  # a dataset record's reference answer is left out
    raise EndpointError(f"a prompt must be a string or a list of {{'role', 'content'}} messages, got {prompt!r:.80}")


# ----- reports ----------------------------------------------------------------------------------
@dataclass
class QueryReport:
    endpoint: str
    results: list[CallResult]

    @property
    def latencies(self) -> list[float]:
        return [r.latency_s for r in self.results if r.ok]

    @property
    def p50(self) -> float | None:
        return percentile(self.latencies, 50)

    @property
    def p95(self) -> float | None:
        return percentile(self.latencies, 95)

    @property
    def errors(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens or 0 for r in self.results)

    def summary(self) -> dict:
        return {"endpoint": self.endpoint, "requests": len(self.results), "errors": self.errors,
                "p50_s": _round(self.p50), "p95_s": _round(self.p95),
                "prompt_tokens": sum(r.prompt_tokens or 0 for r in self.results),
                "completion_tokens": self.completion_tokens}

    def table(self):
        """One row per prompt: response, latency, tokens, status (a pandas DataFrame)."""
        import pandas as pd

        rows = [{"prompt": r.prompt, "response": r.response if r.ok else f"[{r.status}] {r.error}",
                 **({"reference": r.reference} if any(x.reference for x in self.results) else {}),
                 "latency_s": _round(r.latency_s), "prompt_tokens": r.prompt_tokens,
                 "completion_tokens": r.completion_tokens} for r in self.results]
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        s = self.summary()
        return (f"{s['endpoint']}: {s['requests']} requests, {s['errors']} errors, p50 {s['p50_s']} s, "
                f"p95 {s['p95_s']} s, tokens {s['prompt_tokens']} in / {s['completion_tokens']} out")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ----- the one client ---------------------------------------------------------------------------
def _reference(prompt: Prompt) -> str | None:
    return prompt[-1]["content"] if isinstance(prompt, list) and prompt and prompt[-1].get("role") == "assistant" \
        else None


def check_billing(endpoint: Endpoint, requests: int, confirm, max_requests: int | None) -> None:
    """Azure endpoints bill every token, so ``requests`` calls to one need ``confirm=True`` and a stated cap
    (``max_requests``) they fit under; nothing is sent otherwise. Local endpoints cost nothing and pass."""
    from .azure.guard import strict_confirm

    confirmed = strict_confirm(confirm)  # a non-bool is a TypeError for every endpoint: it is a typo either way
    if endpoint.kind != "azure":
        return
    what = f"{requests} request(s) to the Azure endpoint '{endpoint.name}' are billed per token"
    if not confirmed:
        raise EndpointError(f"{what} and need your consent; nothing was sent. Fix: pass confirm=True and "
                            f"max_requests={requests}")
    if type(max_requests) is not int or max_requests < 1:
        raise EndpointError(f"{what}: state the most you agree to pay for with max_requests=N (a whole number, "
                            f"at least {requests}); nothing was sent")
    if requests > max_requests:
        raise EndpointError(f"{what}, over your cap of max_requests={max_requests}; nothing was sent. Fix: send "
                            "fewer requests or raise the cap")


def query_endpoint(endpoint: Endpoint, prompts: list[Prompt], system: str | None = None,
                   max_tokens: int | None = None, temperature: float = 0.0,
                   log: CallLog | None | bool = True, confirm: bool | None = None,
                   max_requests: int | None = None) -> QueryReport:
    """Send each prompt once, in order, and report responses, latency and tokens (logged unless ``log=False``).

    A prompt is a user message or a conversation; a conversation's final assistant turn is kept
    aside as the reference answer. ``max_tokens`` defaults to 64 (16 under the CI profile). An Azure
    endpoint needs ``confirm=True`` and ``max_requests`` (see ``check_billing``).
    """
    check_billing(endpoint, len(prompts), confirm, max_requests)
    calls = _logger(log)
    max_tokens = max_tokens or sizes()["max_tokens"]
    with endpoint.client() as client:
        results = []
        for prompt in prompts:
            result = endpoint.send(client, as_messages(prompt, system), max_tokens, temperature)
            result.reference = _reference(prompt)
            calls.record(endpoint, result)
            results.append(result)
    return QueryReport(endpoint.name, results)


def compare_endpoints(endpoints: list[Endpoint], prompts: list[Prompt], **kwargs):
    """Side by side: one row per prompt, one response column per endpoint (a pandas DataFrame).

    ``kwargs`` go to ``query_endpoint``: an Azure endpoint among them needs ``confirm=True`` and ``max_requests``.
    """
    import pandas as pd

    for endpoint in endpoints:  # all checked first: a refused Azure endpoint must not follow a finished local run
        check_billing(endpoint, len(prompts), kwargs.get("confirm"), kwargs.get("max_requests"))
    reports = [query_endpoint(ep, prompts, **kwargs) for ep in endpoints]
    rows = {"prompt": [r.prompt for r in reports[0].results]}
    for report in reports:
        rows[report.endpoint] = [r.response if r.ok else f"[{r.status}] {r.error}" for r in report.results]
    return pd.DataFrame(rows), reports


@dataclass
class LoadReport:
    endpoint: str
    concurrency: int
    wall_s: float
    results: list[CallResult]

    @property
    def requests_per_s(self) -> float:
        return len(self.results) / self.wall_s if self.wall_s else 0.0

    @property
    def tokens_per_s(self) -> float:
        return sum(r.completion_tokens or 0 for r in self.results) / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict:
        query = QueryReport(self.endpoint, self.results).summary()
        return {**query, "concurrency": self.concurrency, "wall_s": _round(self.wall_s, 2),
                "requests_per_s": _round(self.requests_per_s, 2), "tokens_per_s": _round(self.tokens_per_s, 1),
                "error_kinds": sorted({str(r.status) for r in self.results if not r.ok})}

    def __str__(self) -> str:
        s = self.summary()
        return (f"{s['endpoint']}: {s['requests']} requests at concurrency {s['concurrency']} in {s['wall_s']} s "
                f"-> {s['requests_per_s']} req/s, {s['tokens_per_s']} tokens/s, p50 {s['p50_s']} s, "
                f"p95 {s['p95_s']} s, errors {s['errors']}")


def load_test(endpoint: Endpoint, prompts: list[Prompt], concurrency: int | None = None, requests: int | None = None,
              max_tokens: int | None = None, temperature: float = 0.0, system: str | None = None,
              log: CallLog | None | bool = True, confirm: bool | None = None,
              max_requests: int | None = None) -> LoadReport:
    """``requests`` calls with at most ``concurrency`` in flight, cycling through ``prompts``.

    Defaults: 8 in flight, 50 requests, 32 tokens each (CI profile: 4, 8 and 8). An Azure endpoint
    needs ``confirm=True`` and ``max_requests`` (see ``check_billing``).
    """
    size = sizes()
    concurrency, requests = concurrency or size["concurrency"], requests or size["requests"]
    max_tokens = max_tokens or size["load_max_tokens"]
    if concurrency < 1 or requests < 1:
        raise EndpointError(f"concurrency and requests must be at least 1 (got {concurrency}, {requests})")
    if not prompts:
        raise EndpointError("load_test needs at least one prompt")
    check_billing(endpoint, requests, confirm, max_requests)
    calls = _logger(log)
    conversations = [as_messages(prompts[i % len(prompts)], system) for i in range(requests)]
    with endpoint.client(concurrency) as client, concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        def one(messages):
            result = endpoint.send(client, messages, max_tokens, temperature)
            calls.record(endpoint, result)
            return result

        start = time.perf_counter()
        results = list(pool.map(one, conversations))
        wall = time.perf_counter() - start
    return LoadReport(endpoint.name, concurrency, wall, results)


def _logger(log: CallLog | None | bool) -> CallLog:
    if log is True:
        return default_log()
    if not log:
        return CallLog(None)
    return log
