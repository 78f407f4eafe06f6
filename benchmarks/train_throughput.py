"""LoRA training throughput: our training path against what learners would run instead, measured in the same run.

- ``trl``: TRL's ``SFTTrainer`` with TRL's default settings, as the Hugging Face course teaches it: the
  conversations as a ``messages`` dataset (TRL applies the chat template and tokenizes), padding to the
  longest in the batch, no packing, TRL's default gradient checkpointing and precision; same LoRA, same data.
  On a CPU TRL's default precision is bf16 autocast, which CPUs without native bf16 emulate slowly.
- ``trl-fp32``: the same with ``bf16=False``, the one change a learner makes after seeing that: it separates
  what precision costs TRL from what padding and gradient checkpointing cost it.
- ``baseline``: transformers' Trainer + peft, every conversation padded to the sequence length, default
  settings (default attention, no packing): the strawman.
- ``ours``: ``phi3lab.training.trainer.build_trainer`` with the config's speed switches (padding-free
  batches; flash attention, Liger kernels, torch.compile where available).

Each variant runs in its own child process so its peak memory is its own. Measured per variant:
non-pad tokens/s, step time, peak memory, and MFU. Model FLOPs per token for LoRA are
4 x matmul parameters (forward 2, backward through the frozen weights 2, no weight gradients) plus
causal attention, 6 x layers x hidden x n per token of an n-token conversation (QK^T and AV, forward
and backward). MFU is given against a matmul peak measured in this run and, when known, the spec peak.

    python benchmarks/train_throughput.py                       # CPU: stand-in on the course data
    python benchmarks/train_throughput.py --phi3-mini-shape --seq-len 2048 --batch-size 8 [--synthetic-long]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# Dense bf16 tensor-core peaks from the vendor data sheets (TFLOP/s), used when --peak-tflops is not given.
SPEC_PEAKS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0}
# Phi-3-mini's shape from the catalog, with the rest of its config.json
PHI3_MINI_EXTRA = dict(max_position_embeddings=4096, original_max_position_embeddings=4096, rms_norm_eps=1e-5,
                       sliding_window=2047, bos_token_id=1, eos_token_id=32000, pad_token_id=32000)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phi3-mini-shape", action="store_true", help="the real Phi-3-mini config with random weights")
    p.add_argument("--data", default="data/train.jsonl", help="chat JSONL (ignored with --synthetic-long)")
    p.add_argument("--synthetic-long", action="store_true", help="random conversations of 25-100%% of --seq-len")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="timed optimiser steps per variant")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--variants", default="ours,trl,trl-fp32,baseline")
    p.add_argument("--attn", default="flash_attention_2", help="our path's attention (falls back when unavailable)")
    p.add_argument("--liger", action="store_true", help="our path with Liger kernels (CUDA + liger-kernel)")
    p.add_argument("--compile", action="store_true", help="our path with torch.compile (CUDA)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="checkpointing in our path")
    p.add_argument("--no-packing", action="store_true", help="our path with length-grouped padding instead")
    p.add_argument("--peak-tflops", type=float, help="spec peak of this device (default: known GPUs)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--name", help="result file stem (default: from device and data)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----- data and model ------------------------------------------------------------------------------
def rows_for(args, tokenizer, vocab_size: int) -> list[dict]:
    """Tokenized training rows: the course conversations, or seeded synthetic long ones."""
    import random

    from phi3lab.data import read_conversations
    from phi3lab.training.chat_format import IGNORE_INDEX, tokenize_conversation

    needed = (args.steps + args.warmup_steps) * args.batch_size
    if args.synthetic_long:
        rng = random.Random(0)
        rows = []
        for _ in range(needed):
            n = rng.randint(args.seq_len // 4, args.seq_len)
            ids = [rng.randrange(3, vocab_size) for _ in range(n)]
            prompt = int(n * 0.3)  # the first 30% plays the prompt: not trained
            rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
        return rows
    rows = [tokenize_conversation(tokenizer, c, args.seq_len) for c in read_conversations(REPO / args.data)]
    rows = [{"input_ids": [i % vocab_size for i in r["input_ids"]],  # ids only need to fit the vocabulary:
             "labels": [t if t < 0 else t % vocab_size for t in r["labels"]]}  # speed ignores token values
            for r in rows]
    return (rows * (needed // len(rows) + 1))[:needed]


def build_model(args, device: str, attn: str):
    import torch

    from phi3lab.models import OFFLINE_MODEL, get_spec, load_model, pick_dtype

    dtype = pick_dtype(device)
    if not args.phi3_mini_shape:
        return load_model(OFFLINE_MODEL, device=device, dtype=dtype, attn_implementation=attn)
    from transformers import Phi3Config, Phi3ForCausalLM

    shape = get_spec("phi-3-mini-4k-instruct").architecture
    config = Phi3Config(**shape, **PHI3_MINI_EXTRA, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                        attn_implementation=attn)
    torch.manual_seed(0)
    with torch.device(device):
        model = Phi3ForCausalLM(config).to(dtype)  # random weights: speed does not depend on their values
    return model


def matmul_parameters(model) -> int:
    """Weights that take part in matmuls: every Linear layer (lm_head included), before LoRA."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def measure_matmul_peak(device: str) -> float:
    """FLOP/s of a large square matmul loop: bf16 on CUDA, fp32 on CPU."""
    import torch

    size, repeats = (8192, 50) if device == "cuda" else (1024, 20)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


# ----- one variant, in its own process --------------------------------------------------------------
def run_variant(args, variant: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, TrainingArguments

    from phi3lab.config import TrainConfig
    from phi3lab.models import OFFLINE_MODEL, linear_layer_names, load_tokenizer, pick_device
    from phi3lab.training.chat_format import IGNORE_INDEX
    from phi3lab.training.hf_objects import lora_config
    from phi3lab.training.trainer import (
        ThroughputMeter,
        build_trainer,
        metered_trainer_class,
        peak_memory,
        resolve_speed,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device()
    tokenizer = load_tokenizer(OFFLINE_MODEL)
    config = TrainConfig(model=OFFLINE_MODEL, batch_size=args.batch_size, max_seq_length=min(args.seq_len, 131072),
                         max_steps=args.steps + args.warmup_steps, warmup_ratio=0.0, lora_r=args.lora_r,
                         lora_alpha=2 * args.lora_r, packing=not args.no_packing, attn_implementation=args.attn,
                         use_liger=args.liger, torch_compile=args.compile,
                         gradient_checkpointing=args.gradient_checkpointing, logging_steps=10**5)
    speed = resolve_speed(config, device) if variant == "ours" else {"attn_implementation": "sdpa"}
    base = build_model(args, device, speed["attn_implementation"])
    config.target_modules = linear_layer_names(base)  # LoRA on all linear layers
    n_matmul = matmul_parameters(base)
    layers, hidden = base.config.num_hidden_layers, base.config.hidden_size
    torch.manual_seed(0)
    model = get_peft_model(base, lora_config(config))
    rows = rows_for(args, tokenizer, base.config.vocab_size)
    dataset = Dataset.from_list(rows)
    meter = ThroughputMeter()
    staging = Path(os.environ.get("TMPDIR", "/tmp")) / f"phi3lab-bench-{os.getpid()}"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if variant == "ours":
        trainer = build_trainer(config, model, tokenizer, dataset, None, staging, speed, progress=False, meter=meter,
                                bookkeeping=False)
    elif variant in ("trl", "trl-fp32"):
        trainer = trl_trainer(args, config, model, tokenizer, staging, meter, fp32=variant == "trl-fp32")
        speed = trl_settings(trainer.args)
    else:  # the plain baseline: Trainer defaults, every row padded to the sequence length
        trainer = metered_trainer_class()(
            model=model,
            args=TrainingArguments(output_dir=str(staging), per_device_train_batch_size=args.batch_size,
                                   max_steps=config.max_steps, learning_rate=config.learning_rate,
                                   bf16=device == "cuda", report_to="none", save_strategy="no",
                                   logging_steps=10**5, disable_tqdm=True, dataloader_pin_memory=device == "cuda"),
            train_dataset=dataset,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding="max_length", max_length=args.seq_len,
                                                 label_pad_token_id=IGNORE_INDEX),
            meter=meter,
        )
    trainer.train()
    totals = meter.totals(skip=args.warmup_steps)
    memory, memory_kind = peak_memory()
    flops = 4 * n_matmul * totals["tokens"] + 6 * layers * hidden * totals["squared_lengths"]
    return {"variant": variant, "speed": speed if variant != "baseline" else "Trainer defaults, pad to max length",
            "timed_steps": totals["steps"], "non_pad_tokens": totals["tokens"],
            "non_pad_tokens_per_second": totals["tokens_per_second"],
            "step_seconds": totals["seconds"] / max(totals["steps"], 1),
            "model_flops_per_second": flops / totals["seconds"] if totals["seconds"] else 0.0,
            "peak_memory_bytes": memory, "peak_memory_kind": memory_kind, "matmul_parameters": n_matmul,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}


def trl_trainer(args, config, model, tokenizer, staging: Path, meter, fp32: bool = False):
    """TRL's SFTTrainer as a learner following the Hugging Face course runs it: TRL's defaults, only the batch size,
    sequence length and step count set; the same conversations as a ``messages`` dataset (or, for synthetic data,
    the same token rows), the same LoRA model."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from phi3lab.training.trainer import metered_trainer_class

    needed = (args.steps + args.warmup_steps) * args.batch_size
    if args.synthetic_long:
        data = [{"input_ids": row["input_ids"]} for row in rows_for(args, tokenizer, model.config.vocab_size)]
    else:
        from phi3lab.data import read_conversations

        conversations = [{"messages": c} for c in read_conversations(REPO / args.data)]
        data = (conversations * (needed // len(conversations) + 1))[:needed]
    import torch

    # On a CPU, TRL's default bf16=True stops with "You need to assign use_cpu": a learner does what it says.
    on_cpu = {} if torch.cuda.is_available() else {"use_cpu": True}
    precision = {"bf16": False} if fp32 else {}
    settings = SFTConfig(output_dir=str(staging), per_device_train_batch_size=args.batch_size, max_length=args.seq_len,
                         max_steps=config.max_steps, report_to="none", save_strategy="no", logging_steps=10**5,
                         disable_tqdm=True, **on_cpu, **precision)
    return metered_trainer_class(SFTTrainer)(model=model, args=settings, train_dataset=Dataset.from_list(data),
                                             processing_class=tokenizer, meter=meter)


def trl_settings(settings) -> dict:
    """What TRL's defaults resolved to on this machine (they decide its speed)."""
    return {name: getattr(settings, name) for name in ("packing", "padding_free", "gradient_checkpointing", "bf16",
                                                       "fp16", "use_cpu", "max_length", "learning_rate")}


# ----- the parent: run all, compare, write ---------------------------------------------------------
def device_description() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def versions() -> dict:
    import peft
    import torch
    import transformers
    import trl

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "trl": trl.__version__}


def spec_peak(args, device_name: str) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    return next((tflops * 1e12 for key, tflops in SPEC_PEAKS.items() if key in device_name), None)


def run_child(argv: list[str], variant: str) -> dict:
    command = [sys.executable, __file__, *argv, "--worker", variant]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"variant {variant} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    head = ("| variant | non-pad tokens/s | step time (s) | MFU vs measured matmul peak | MFU vs spec peak | "
            "peak memory (GiB) |\n|---|---:|---:|---:|---:|---:|")
    lines = [f"# Training throughput: {report['workload']}", "",
             f"Device: {report['device']} · {report['dtype']} · command: `{report['command']}`", "",
             f"Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}", "", head]
    for r in report["variants"]:
        spec = f"{r['mfu_spec']:.1%}" if r.get("mfu_spec") is not None else "–"
        lines.append(f"| {r['variant']} | {r['non_pad_tokens_per_second']:,.0f} | {r['step_seconds']:.3f} | "
                     f"{r['mfu_measured']:.1%} | {spec} | {r['peak_memory_bytes'] / 2**30:.2f} ({r['peak_memory_kind']}) |")
    if report.get("speedup_over_trl") is not None:
        lines += ["", f"Ours over TRL's SFTTrainer defaults in non-pad tokens/s: **{report['speedup_over_trl']:.2f}×**."]
    if report.get("speedup_over_trl_fp32") is not None:
        lines += ["", f"Ours over TRL's defaults with bf16=False: **{report['speedup_over_trl_fp32']:.2f}×**."]
    if report.get("speedup") is not None:
        lines += ["", f"Speed-up of ours over the padded baseline in non-pad tokens/s: **{report['speedup']:.2f}×**."]
    peak = report["matmul_peak_flops"] / 1e12
    lines += ["", f"Measured matmul peak: {peak:.2f} TFLOP/s; spec peak: "
              f"{report['spec_peak_flops'] / 1e12:.1f} TFLOP/s." if report["spec_peak_flops"] else
              f"Measured matmul peak: {peak:.3f} TFLOP/s; no spec peak given (--peak-tflops)."]
    return "\n".join(lines) + "\n"


def ratio(by_name: dict, faster: str, slower: str) -> float | None:
    """Non-pad tokens/s of ``faster`` over ``slower`` when both ran."""
    if not {faster, slower} <= set(by_name):
        return None
    return by_name[faster]["non_pad_tokens_per_second"] / by_name[slower]["non_pad_tokens_per_second"]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.worker:
        print(json.dumps(run_variant(args, args.worker)))
        return 0
    device, device_name = device_description()
    peak = measure_matmul_peak(device)
    spec = spec_peak(args, device_name)
    variants = []
    for variant in args.variants.split(","):
        result = run_child(argv, variant)
        result["mfu_measured"] = result["model_flops_per_second"] / peak
        result["mfu_spec"] = result["model_flops_per_second"] / spec if spec else None
        variants.append(result)
        print(f"{variant}: {result['non_pad_tokens_per_second']:,.1f} non-pad tokens/s, "
              f"{result['step_seconds']:.3f} s/step, peak {result['peak_memory_bytes'] / 2**30:.2f} GiB", flush=True)
    by_name = {v["variant"]: v for v in variants}
    speedup = ratio(by_name, "ours", "baseline")
    model = "Phi-3-mini shape (random weights)" if args.phi3_mini_shape else "phi3-tiny-offline stand-in"
    data = f"synthetic long sequences ({args.seq_len // 4}-{args.seq_len} tokens)" if args.synthetic_long else args.data
    report = {
        "workload": f"{model}, LoRA r{args.lora_r} on all linear layers, {data}, batch {args.batch_size}, "
                    f"sequence length {args.seq_len}, {args.steps} timed steps after {args.warmup_steps} warm-up",
        "command": "python benchmarks/train_throughput.py " + " ".join(argv),
        "device": device_name, "dtype": variants[0]["dtype"], "versions": versions(),
        "matmul_peak_flops": peak, "spec_peak_flops": spec, "variants": variants, "speedup": speedup,
        "speedup_over_trl": ratio(by_name, "ours", "trl"),
        "speedup_over_trl_fp32": ratio(by_name, "ours", "trl-fp32"),
        "flops_per_token": "4 x matmul parameters + 6 x layers x hidden x conversation length (causal attention)",
    }
    stem = args.name or "-".join(["train_throughput", device, "phi3mini" if args.phi3_mini_shape else "standin",
                                  "synthetic" if args.synthetic_long else "course", f"seq{args.seq_len}"])
    from phi3lab.io import atomic_write_json, atomic_write_text

    atomic_write_json(RESULTS / f"{stem}.json", report)
    atomic_write_text(RESULTS / f"{stem}.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
