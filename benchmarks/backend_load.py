"""The local endpoint's backends side by side: PyTorch fp32, ONNX fp32 and ONNX int4, at 1 and 8 clients.

    python benchmarks/backend_load.py                      # the latest finished run, 32-token replies
    python benchmarks/backend_load.py --backends onnx-int4 --concurrency 1 8 --requests 8 32

For each backend a real server starts on loopback (``LocalServer``: the run's adapter for PyTorch, its
``phi3lab export`` folder for ONNX, exported first when missing) and answers one warm-up request. Then,
for each concurrency, that many clients keep one streamed request each in flight (``stream: true`` with
``stream_options.include_usage``, through the openai client), on validation prompts no earlier request
sent. Reported per backend and concurrency: generated tokens/s (all clients together), p50/p95 latency of a whole reply,
p50/p95 time to the first token, and the mean reply length. Goal on 2 CPU cores with the stand-in: ONNX int4
at least 5x PyTorch's tokens/s at 8 clients, and a p50 under 1 s for a 32-token reply. Speed on a shared
machine varies: the load average before and after each backend is recorded with the numbers. Results go
to stdout and ``benchmarks/results/backend_load-cpu-<model>-<run>.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import time
from dataclasses import dataclass

from phi3lab.paths import REPO_ROOT

BACKENDS = {"pytorch": None, "onnx-fp32": "fp32", "onnx-int4": "int4"}  # name: export precision
RESULTS = REPO_ROOT / "benchmarks" / "results"
GOAL_SPEEDUP, GOAL_P50_S = 5.0, 1.0


@dataclass
class Streamed:
    latency_s: float
    first_token_s: float | None
    tokens: int


def stream_one(client, model: str, messages: list[dict], max_tokens: int) -> Streamed:
    """One streamed chat completion: when its first text arrived, when it ended, how many tokens it had."""
    start = time.perf_counter()
    first, tokens = None, 0
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return Streamed(time.perf_counter() - start, first, tokens)


def measure(url: str, model: str, conversations: list[list[dict]], concurrency: int, requests: int,
            max_tokens: int) -> dict:
    from phi3lab.endpoints import openai_client
    from phi3lab.monitoring import percentile

    work = [conversations[i % len(conversations)] for i in range(requests)]
    with openai_client(f"{url}/v1", "no-key", 600.0, concurrency, max_retries=0) as client, \
            concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        results = list(pool.map(lambda messages: stream_one(client, model, messages, max_tokens), work))
        wall = time.perf_counter() - start
    latencies, firsts = [r.latency_s for r in results], [r.first_token_s for r in results if r.first_token_s]
    return {"concurrency": concurrency, "requests": requests, "wall_s": round(wall, 2),
            "tokens_per_s": round(sum(r.tokens for r in results) / wall, 1),
            "p50_s": round(percentile(latencies, 50), 3), "p95_s": round(percentile(latencies, 95), 3),
            "ttft_p50_s": round(percentile(firsts, 50), 3) if firsts else None,
            "ttft_p95_s": round(percentile(firsts, 95), 3) if firsts else None,
            "mean_reply_tokens": round(sum(r.tokens for r in results) / len(results), 1)}


def run_backend(name: str, run, conversations, args) -> dict:
    from phi3lab.export import export_onnx
    from phi3lab.generation import prompt_messages
    from phi3lab.serving import LocalServer

    precision = BACKENDS[name]
    source = {"onnx": export_onnx(run, precision=precision).folder} if precision else {"adapter": run.adapter_dir}
    # Each measurement gets prompts no earlier request sent, so a server that caches a prompt's start gains only
    # what prompts really share (the system prompt), never a whole repeated prompt.
    prompts = [prompt_messages(c) for c in conversations]
    warm_up, slices, start = prompts[-1:], [], 0
    for n in args.requests:
        slices.append(prompts[start:start + n] or prompts[:-1])
        start += n
    load_before = os.getloadavg()
    with LocalServer(**source) as server:
        model = server.health()["model"]
        measure(server.url, model, warm_up, 1, 1, args.max_tokens)  # not measured
        rows = [measure(server.url, model, work, c, n, args.max_tokens)
                for c, n, work in zip(args.concurrency, args.requests, slices, strict=True)]
    return {"backend": name, "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="run name or folder (default: the latest finished run)")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--requests", nargs="+", type=int, default=[8, 32], help="requests per concurrency")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", default=None, help="JSON file (default: under benchmarks/results/)")
    args = parser.parse_args(argv)

    from phi3lab.evaluation import load_validation
    from phi3lab.io import atomic_write_json
    from phi3lab.runs import find_run

    run = find_run(args.run)
    conversations = load_validation(run, limit=sum(args.requests) + 1)
    backends = [run_backend(name, run, conversations, args) for name in args.backends]
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
              "run": run.name, "model": run.config().model, "max_tokens": args.max_tokens, "backends": backends,
              **_goals(backends, max(args.concurrency))}
    model = "standin" if "offline" in result["model"] else result["model"]
    out = args.out or RESULTS / f"backend_load-cpu-{model}-{run.name}.json"
    atomic_write_json(out, result)
    print(table(backends))
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("speedup", "int4_p50", "meets"))}))
    print(f"written to {out}")
    return result


def _goals(backends: list[dict], concurrency: int) -> dict:
    at = {b["backend"]: next((r for r in b["rows"] if r["concurrency"] == concurrency), None) for b in backends}
    if not (at.get("pytorch") and at.get("onnx-int4")):
        return {}
    speedup = at["onnx-int4"]["tokens_per_s"] / at["pytorch"]["tokens_per_s"]
    single = next((r for b in backends if b["backend"] == "onnx-int4" for r in b["rows"] if r["concurrency"] == 1), None)
    p50 = single["p50_s"] if single else None
    return {f"speedup_int4_vs_pytorch_at_{concurrency}": round(speedup, 1), "int4_p50_s_at_1": p50,
            "meets_goal": speedup >= GOAL_SPEEDUP and p50 is not None and p50 < GOAL_P50_S}


def table(backends: list[dict]) -> str:
    keys = ["concurrency", "tokens_per_s", "p50_s", "p95_s", "ttft_p50_s", "ttft_p95_s", "mean_reply_tokens"]
    lines = [f"{'backend':<10}" + "".join(f"{k:>18}" for k in keys)]
    for backend in backends:
        lines += [f"{backend['backend']:<10}" + "".join(f"{str(row[k]):>18}" for k in keys) for row in backend["rows"]]
        lines.append(f"{'':<10}  load average {backend['load_average_before']} -> {backend['load_average_after']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
