"""``phi3lab train`` (the notebook's training path, headless) and ``phi3lab generate`` (chat with a model)."""

from __future__ import annotations

import shutil
import sys


def register(commands) -> None:
    train = commands.add_parser(
        "train", help="fine-tune with LoRA exactly as notebook 02 does",
        description="Fine-tune with LoRA exactly as notebook 02 does. On several GPUs, start one process per GPU: "
                    "`phi3lab launch --config FILE --gpus N` (or `accelerate launch --config_file launch/ddp.yaml "
                    "--num_processes N -m phi3lab train --config FILE`; launch/fsdp.yaml shards the model).")
    train.add_argument("--config", metavar="FILE", help="TrainConfig as YAML/JSON (default: the workshop preset)")
    train.add_argument("--preset", default="workshop default", help="preset used when no --config is given")
    train.add_argument("--run-name", metavar="NAME",
                       help="the run's folder under the runs root (PHI3LAB_RUNS, default runs/); overrides the config")
    train.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start over")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    train.add_argument("--adapter-out", metavar="DIR",
                       help="also copy the finished adapter (with history.json, summary.json) here: an Azure job's output")
    train.set_defaults(handler=run_train)

    generate = commands.add_parser("generate", help="chat with a base model, a trained adapter or a merged model")
    source = generate.add_mutually_exclusive_group()
    source.add_argument("--model", help="catalog model name (default: the machine's default model)")
    source.add_argument("--adapter", metavar="DIR", help="adapter folder written by training (runs/<run name>/adapter)")
    source.add_argument("--merged", metavar="DIR", help="folder written by merge_and_save")
    generate.add_argument("--prompt", action="append", help="one user message (repeatable); omit to chat on stdin")
    generate.add_argument("--system", help="system message")
    generate.add_argument("--max-new-tokens", type=int, default=128)
    generate.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    generate.set_defaults(handler=run_generate)


def run_train(args) -> int:
    """One training process; under a launcher (`accelerate launch`, torchrun, Azure ML) every process runs this,
    and only the main one prints the result or the error."""
    from ..config import TrainConfig, default_config
    from ..errors import Phi3LabError
    from ..training.distributed import is_main_process
    from ..training.trainer import describe_summary, train

    config = TrainConfig.load(args.config) if args.config else default_config(args.preset)
    if args.run_name:
        config = config.update(run_name=args.run_name)
    try:
        result = train(config, resume=not args.fresh, progress=not args.no_progress)
    except Phi3LabError:
        if is_main_process():
            raise
        return 2  # every process stops with the main process's error; the main process shows it once
    if is_main_process():
        print(describe_summary(result.summary))
        print(f"adapter saved to {result.adapter_dir}")
        if args.adapter_out:
            shutil.copytree(result.adapter_dir, args.adapter_out, dirs_exist_ok=True)
            print(f"adapter copied to {args.adapter_out}")
    return 0


def _load(args):
    from ..models import load_model, load_tokenizer
    from ..training.artifacts import load_merged, load_trained

    if args.adapter:
        return load_trained(args.adapter)
    if args.merged:
        return load_merged(args.merged)
    return load_model(args.model).eval(), load_tokenizer(args.model)


def run_generate(args) -> int:
    from ..generation import generate

    model, tokenizer = _load(args)
    system = [{"role": "system", "content": args.system}] if args.system else []

    def reply(messages):
        return generate(model, tokenizer, [messages], max_new_tokens=args.max_new_tokens, do_sample=args.sample)[0]

    if args.prompt:
        answers = generate(model, tokenizer, [system + [{"role": "user", "content": p}] for p in args.prompt],
                           max_new_tokens=args.max_new_tokens, do_sample=args.sample)
        for answer in answers:
            print(answer)
        return 0
    conversation = list(system)
    print("chat with the model; an empty line ends", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        conversation.append({"role": "user", "content": line.strip()})
        answer = reply(conversation)
        conversation.append({"role": "assistant", "content": answer})
        print(answer, flush=True)
    return 0
