"""Fidelity of a run's ONNX exports: fp32 and int4 against PyTorch on the course validation prompts.

    python benchmarks/export_fidelity.py                   # the latest finished run, all validation prompts
    python benchmarks/export_fidelity.py --run lora --limit 16 --threads 2

Greedy decoding throughout (``phi3lab.fidelity.measure_fidelity``). Goal: the fp32 export's first 32 tokens
equal PyTorch's on at least 95% of prompts; int4's token F1 and perplexity are reported beside fp32's. The
exports are built first when missing (``runs/<run>/exports/``). Results go to stdout and to
``benchmarks/results/export_fidelity-cpu-<model>-<run>.json`` (with the machine's load average before and
after, since speed on a shared machine varies).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from phi3lab.paths import REPO_ROOT

GOAL_FP32_MATCH = 0.95
RESULTS = REPO_ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="run name or folder (default: the latest finished run)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N validation prompts")
    parser.add_argument("--prefix-tokens", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96, help="reply length for token F1 and ROUGE-L")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="JSON file (default: under benchmarks/results/)")
    args = parser.parse_args(argv)

    import torch

    from phi3lab.evaluation import load_validation
    from phi3lab.fidelity import measure_fidelity
    from phi3lab.io import atomic_write_json
    from phi3lab.runs import find_run

    if args.threads:
        torch.set_num_threads(args.threads)
    run = find_run(args.run)
    conversations = load_validation(run, limit=args.limit)
    load_before = os.getloadavg()
    report = measure_fidelity(run, conversations, precisions=("fp32", "int4"), prefix_tokens=args.prefix_tokens,
                              max_new_tokens=args.max_new_tokens)
    fp32 = report.rows()[1][f"first {args.prefix_tokens} tokens = PyTorch's"]
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "run": run.name, "model": run.config().model, "torch_threads": torch.get_num_threads(),
              "max_new_tokens": args.max_new_tokens, **report.to_dict(),
              "goal_fp32_match": GOAL_FP32_MATCH, "meets_goal": fp32 >= GOAL_FP32_MATCH}
    out = args.out or RESULTS / f"export_fidelity-cpu-{'standin' if 'offline' in result['model'] else result['model']}" \
                               f"-{run.name}.json"
    atomic_write_json(out, result)
    print(report.table())
    print(f"fp32 export matches PyTorch's first {args.prefix_tokens} tokens on {fp32:.1%} of prompts "
          f"(goal {GOAL_FP32_MATCH:.0%}: {'met' if result['meets_goal'] else 'NOT met'}); written to {out}")
    print(json.dumps({k: result[k] for k in ("load_average_before", "load_average_after")}))
    return result


if __name__ == "__main__":
    main()
