"""Load on the local endpoint: concurrent clients against a sequential baseline, same server, same run.

    python benchmarks/endpoint_load.py                      # 8 parallel x 50 requests, 32 tokens each
    python benchmarks/endpoint_load.py --concurrency 4 --requests 16 --max-tokens 8   # quick (CI)

A real server (``phi3lab.serving.LocalServer``, the trained adapter when one exists) starts on
loopback. After one warm-up request, the baseline sends requests one at a time (what a single
client sees); then the load phase keeps ``--concurrency`` requests in flight. The server batches
concurrent requests into shared forward passes, so the ratio of the two throughputs measures
what batching buys on this machine. Results go to stdout and ``endpoint_load.json`` in
``phi3lab.runs.benchmark_dir()`` (``runs/benchmarks/`` unless ``PHI3LAB_RUNS`` says otherwise).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from phi3lab.endpoints import LocalEndpoint, load_test, query_endpoint
from phi3lab.io import atomic_write_json
from phi3lab.runs import benchmark_dir
from phi3lab.serving import LocalServer

PROMPTS = [
    "What is LoRA in one sentence?",
    "Name three uses of a small language model.",
    "Explain what a learning rate is.",
    "Why do we keep a validation set?",
]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--baseline-requests", type=int, default=None, help="default: requests // 4, at least 4")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--base", action="store_true", help="serve the base model even if an adapter exists")
    parser.add_argument("--out", default=None, help="JSON file for the result (default: endpoint_load.json in the "
                                                    "runs root's benchmarks folder)")
    args = parser.parse_args(argv)
    baseline_requests = args.baseline_requests or max(4, args.requests // 4)

    with LocalServer(adapter=None if args.base else "auto") as server:
        endpoint = LocalEndpoint(server.url, name="local")
        query_endpoint(endpoint, PROMPTS[:1], max_tokens=args.max_tokens, log=False)  # warm-up, not measured
        baseline = load_test(endpoint, PROMPTS, concurrency=1, requests=baseline_requests,
                             max_tokens=args.max_tokens, log=False)
        before = server.health()
        loaded = load_test(endpoint, PROMPTS, concurrency=args.concurrency, requests=args.requests,
                           max_tokens=args.max_tokens, log=False)
        after = server.health()

    batches = after["batches_run"] - before["batches_run"]
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.system()}, device {after['device']}",
        "model": after["model"], "adapter": after["adapter"], "max_tokens": args.max_tokens,
        "baseline_sequential": baseline.summary(),
        "concurrent": {**loaded.summary(), "mean_batch_size": round(args.requests / batches, 2) if batches else None},
        "throughput_ratio": round(loaded.requests_per_s / baseline.requests_per_s, 2) if baseline.requests_per_s else None,
        "tokens_per_s_ratio": round(loaded.tokens_per_s / baseline.tokens_per_s, 2) if baseline.tokens_per_s else None,
    }
    atomic_write_json(args.out or benchmark_dir() / "endpoint_load.json", result)
    print(f"baseline   : {baseline}")
    print(f"concurrent : {loaded}  (mean batch {result['concurrent']['mean_batch_size']})")
    print(f"ratio      : {result['throughput_ratio']}x requests/s, {result['tokens_per_s_ratio']}x tokens/s")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
