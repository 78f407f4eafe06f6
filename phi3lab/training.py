"""Local LoRA fine-tuning on top of transformers' Trainer and peft, with atomic checkpoints and resume.

One code path serves the notebook, the CLI (``phi3lab train --config``) and the benchmark:
``train(config)`` checks everything it can before the first step, builds a peft model, tokenizes
the chat data with the model's own template (loss on assistant tokens only, end-of-turn token
included), trains with AdamW on cross-entropy, and writes ``checkpoint-N/`` folders and a final
``adapter/`` folder, each in one atomic rename.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import resource
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig
from .errors import Phi3LabError
from .history import MetricsHistory
from .io import atomic_directory, atomic_write_json

# peft still calls a transformers property renamed in v5; the warning is noise for learners.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".staging"  # Trainer writes checkpoints here; they are published by one rename when complete
KEEP_CHECKPOINTS = 2
CONFIG_NAME, HISTORY_NAME, SUMMARY_NAME = "config.yaml", "history.json", "summary.json"


class TrainingError(Phi3LabError):
    """Training cannot start or could not finish; the message says what to change."""


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    history: MetricsHistory
    summary: dict = field(default_factory=dict)


def notice(message: str, notices: list[str] | None = None) -> None:
    """A one-line note about a fallback (shown to the learner, kept in the run summary)."""
    print(f"note: {message}")
    if notices is not None:
        notices.append(message)


# ----- tokenization: loss on assistant tokens only ---------------------------------------------
def _common_prefix_length(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the model must learn to write.

    The stand-in's and Phi-3's chat templates have no ``{% generation %}`` markers, so
    ``return_assistant_tokens_mask`` cannot be used. Instead each assistant turn is located by
    rendering prefixes of the conversation with the model's own template: the turn starts where
    the prompt up to it (with the generation prompt) ends, and runs until the rendering of the
    conversation through that turn stops agreeing with the full text. That end includes the
    end-of-turn token (``<|im_end|>``, ``<|end|>``), so the model learns to stop.
    """
    def render(msgs, prompt=False):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)

    full = render(messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:i], prompt=True)
        if not full.startswith(prompt):
            raise TrainingError("the model's chat template renders a conversation differently from its prefixes; "
                                "assistant tokens cannot be located. Use a catalog model's tokenizer.")
        end = _common_prefix_length(render(messages[:i + 1]), full)
        spans.append((len(prompt), end))
    return full, spans


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> dict:
    """``input_ids`` and ``labels`` for one conversation, truncated to ``max_length`` tokens.

    ``labels`` equal ``input_ids`` on assistant tokens (each turn's end-of-turn token included) and
    -100 everywhere else, so cross-entropy trains only what the assistant says.
    """
    text, spans = assistant_char_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                        truncation=True, max_length=max_length)
    labels = []
    for token_id, (lo, hi) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        # A token is trained when it ends inside a span. The character-level end can stop partway
        # into the next turn's first special token (e.g. "<|" of "<|user|>"), which is excluded so.
        trained = hi > lo and any(start < hi <= end for start, end in spans)
        labels.append(token_id if trained else IGNORE_INDEX)
    return {"input_ids": list(encoded["input_ids"]), "labels": labels,
            "attention_mask": [1] * len(encoded["input_ids"])}


def label_preview(tokenizer, messages: list[dict], max_length: int = 4096) -> str:
    """The rendered conversation with the trained tokens wrapped in [[ ]], to see what the loss covers."""
    row = tokenize_conversation(tokenizer, messages, max_length)
    pieces, trained_run = [], []
    for token_id, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE_INDEX:
            trained_run.append(token_id)
            continue
        if trained_run:
            pieces.append(f"[[{tokenizer.decode(trained_run)}]]")
            trained_run = []
        pieces.append(tokenizer.decode([token_id]))
    if trained_run:
        pieces.append(f"[[{tokenizer.decode(trained_run)}]]")
    return "".join(pieces)


def build_dataset(tokenizer, conversations: list[list[dict]], max_length: int, notices: list[str] | None = None):
    """A ``datasets.Dataset`` of tokenized conversations; ones with nothing left to train are dropped."""
    from datasets import Dataset

    rows = [tokenize_conversation(tokenizer, c, max_length) for c in conversations]
    kept = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows
            if any(label != IGNORE_INDEX for label in r["labels"])]
    if len(kept) < len(rows):
        notice(f"{len(rows) - len(kept)} conversation(s) have no assistant tokens within max_seq_length="
               f"{max_length} and are skipped", notices)
    if not kept:
        raise TrainingError(f"no conversation has assistant text within the first {max_length} tokens; raise "
                            f"max_seq_length or shorten the system/user messages")
    return Dataset.from_list(kept)


# ----- checks before any compute ------------------------------------------------------------------
def check_config(config: TrainConfig) -> TrainConfig:
    """Re-validate the config and check it against the model's context length."""
    from .models import get_spec

    config = TrainConfig.create(**config.model_dump())  # catches values set around validation
    spec = get_spec(config.model)
    if config.max_seq_length > spec.context_length:
        raise TrainingError(f"max_seq_length={config.max_seq_length} is above {config.model}'s context length of "
                            f"{spec.context_length} tokens. Fix: set max_seq_length to at most {spec.context_length}.")
    return config


def check_data(config: TrainConfig) -> None:
    """Validate the chat files before loading the model (every bad line is named)."""
    from .data import validate

    for name in ("train_file", "validation_file"):
        path = config.resolve(getattr(config, name))
        if path is not None:
            validate(path).raise_for_errors()


def check_target_modules(config: TrainConfig, model) -> None:
    from .models import linear_layer_names

    available = linear_layer_names(model)
    missing = [t for t in config.target_modules if t not in available]
    if missing:
        raise TrainingError(
            f"target_modules {missing} are not linear layers of {config.model}. Its linear layers are: "
            f"{', '.join(available)}. Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj, so names "
            f"like q_proj or up_proj match nothing.")


def load_splits(config: TrainConfig, tokenizer, notices: list[str] | None = None):
    """(train, validation) datasets; without a validation file, 10% of the training data (seeded)."""
    from .data import read_conversations

    train_conversations = list(read_conversations(config.resolve(config.train_file)))
    train_set = build_dataset(tokenizer, train_conversations, config.max_seq_length, notices)
    if config.validation_file is None:
        split = train_set.train_test_split(test_size=0.1, seed=config.seed)
        return split["train"], split["test"]
    validation = list(read_conversations(config.resolve(config.validation_file)))
    return train_set, build_dataset(tokenizer, validation, config.max_seq_length, notices)


# ----- speed switches ---------------------------------------------------------------------------
def resolve_speed(config: TrainConfig, device: str, notices: list[str] | None = None) -> dict:
    """The speed settings that can actually be used here; each fallback gets a one-line notice."""
    from transformers.utils import is_flash_attn_2_available

    cuda = device == "cuda"
    attn = config.attn_implementation
    if attn == "flash_attention_2" and not (cuda and is_flash_attn_2_available()):
        notice("flash_attention_2 needs a CUDA GPU and the flash-attn package; using sdpa instead", notices)
        attn = "sdpa"
    liger = config.use_liger
    if liger and not (cuda and importlib.util.find_spec("liger_kernel")):
        notice("use_liger needs a CUDA GPU and the liger-kernel package; training without Liger kernels", notices)
        liger = False
    compile_ = config.torch_compile
    if compile_ and not cuda:
        notice("torch_compile is only used on a CUDA GPU (on CPU compiling costs more than it saves); "
               "training uncompiled", notices)
        compile_ = False
    return {"packing": config.packing, "attn_implementation": attn, "use_liger": liger,
            "torch_compile": compile_, "gradient_checkpointing": config.gradient_checkpointing}


def make_collator(tokenizer, packing: bool, attn_implementation: str):
    """Padding-free batches (one flattened row, positions restart per conversation) or dynamic padding.

    With packing, every token in a batch is a real token; the attention stays within each
    conversation (flash-attention gets sequence boundaries, sdpa/eager a block-diagonal mask built
    by transformers from the restarting ``position_ids``).
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        return DataCollatorWithFlattening(return_flash_attn_kwargs=attn_implementation == "flash_attention_2")
    return DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX,
                                  return_tensors="pt")


# ----- measuring ---------------------------------------------------------------------------------
class ThroughputMeter:
    """Counts non-pad tokens and times optimiser steps (data loading, evaluation and saving excluded)."""

    def __init__(self):
        self.steps: list[dict] = []  # one row per optimiser step: seconds, tokens, sum of squared lengths
        self._tokens = self._squares = 0
        self._start = None

    def count(self, inputs) -> None:
        lengths = sequence_lengths(inputs)
        self._tokens += sum(lengths)
        self._squares += sum(n * n for n in lengths)

    def begin(self) -> None:
        _sync()
        self._start = time.perf_counter()

    def end(self) -> None:
        _sync()
        if self._start is not None:
            self.steps.append({"seconds": time.perf_counter() - self._start, "tokens": self._tokens,
                               "squared_lengths": self._squares})
        self._tokens = self._squares = 0
        self._start = None

    def totals(self, skip: int = 0) -> dict:
        rows = self.steps[skip:]
        seconds = sum(r["seconds"] for r in rows)
        tokens = sum(r["tokens"] for r in rows)
        return {"steps": len(rows), "seconds": seconds, "tokens": tokens,
                "squared_lengths": sum(r["squared_lengths"] for r in rows),
                "tokens_per_second": tokens / seconds if seconds else 0.0}


def sequence_lengths(inputs) -> list[int]:
    """Real (non-pad) length of every conversation in a padded or flattened batch."""
    import torch

    if "attention_mask" in inputs and inputs["attention_mask"] is not None:
        return [int(n) for n in inputs["attention_mask"].sum(dim=-1).tolist()]
    positions = inputs.get("position_ids")
    if positions is None:
        return [int(inputs["input_ids"].shape[-1])] * int(inputs["input_ids"].shape[0])
    starts = torch.nonzero(positions.flatten() == 0).flatten().tolist() + [positions.numel()]
    return [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory() -> tuple[int, str]:
    """Peak memory so far: CUDA allocations on a GPU, the process's peak RSS on CPU."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda max allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process peak RSS"


def metered_trainer_class():
    from transformers import Trainer, TrainerCallback

    class MeteredTrainer(Trainer):
        """transformers' Trainer that also counts the tokens it trains on (measurement only)."""

        def __init__(self, *args, meter: ThroughputMeter | None = None, **kwargs):
            self.meter = meter or ThroughputMeter()
            super().__init__(*args, **kwargs)
            self.add_callback(_MeterCallback(self.meter))

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.meter.count(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    class _MeterCallback(TrainerCallback):
        def __init__(self, meter):
            self.meter = meter

        def on_step_begin(self, args, state, control, **kwargs):
            self.meter.begin()

        def on_step_end(self, args, state, control, **kwargs):
            self.meter.end()

    return MeteredTrainer


# ----- history and atomic checkpoints --------------------------------------------------------------
def _checkpoint_callback_class():
    from transformers import TrainerCallback

    class CheckpointPublisher(TrainerCallback):
        """Records the metrics history and publishes each finished checkpoint with one rename.

        Trainer writes ``checkpoint-N`` piece by piece; a crash in between would leave a folder that
        looks complete but is not. Trainer therefore writes under ``.staging/`` and this callback,
        once the folder is whole, adds the config and history and renames it into the output folder.
        """

        def __init__(self, config: TrainConfig, output_dir: Path, history: MetricsHistory):
            self.config, self.output_dir, self.history = config, output_dir, history

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.history.add_trainer_log(state.global_step, logs or {})

        def on_save(self, args, state, control, **kwargs):
            name = f"checkpoint-{state.global_step}"
            staged = Path(args.output_dir) / name
            self.config.save(staged / CONFIG_NAME)
            self.history.save(staged / HISTORY_NAME)
            final = self.output_dir / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            for old in complete_checkpoints(self.output_dir)[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old, ignore_errors=True)

    return CheckpointPublisher


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Published checkpoints holding everything resume needs, oldest first."""
    found = []
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            match = CHECKPOINT_RE.match(path.name)
            needed = ("trainer_state.json", "adapter_model.safetensors", "optimizer.pt", CONFIG_NAME, HISTORY_NAME)
            if match and path.is_dir() and all((path / n).is_file() for n in needed):
                found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


# Fields whose change makes an old checkpoint a different run (bookkeeping fields may change).
_RUN_FIELDS = ("model", "train_file", "validation_file", "learning_rate", "epochs", "batch_size", "grad_accum",
               "max_seq_length", "max_steps", "warmup_ratio", "seed", "lora_r", "lora_alpha", "lora_dropout",
               "target_modules", "packing")


def changed_fields(config: TrainConfig, saved_config: Path) -> list[str]:
    saved = TrainConfig.load(saved_config)
    return [f for f in _RUN_FIELDS if getattr(saved, f) != getattr(config, f)]


def resume_point(config: TrainConfig, output_dir: Path, resume: bool, notices: list[str] | None = None) -> Path | None:
    """The last complete checkpoint of this same run, or None to start fresh (old checkpoints removed)."""
    checkpoints = complete_checkpoints(output_dir)
    changed = changed_fields(config, checkpoints[-1] / CONFIG_NAME) if checkpoints else []
    if changed and resume:
        notice(f"the checkpoints in {output_dir} are from a run with other {', '.join(changed)}; starting a new run",
               notices)
    if not resume or not checkpoints or changed:
        for path in output_dir.glob("checkpoint-*"):
            shutil.rmtree(path, ignore_errors=True)
        return None
    return checkpoints[-1]


def finished_run(config: TrainConfig, output_dir: Path) -> TrainResult | None:
    """The saved result when this very run already finished in ``output_dir`` (the adapter is written last)."""
    adapter_dir = output_dir / "adapter"
    if not (adapter_dir / SUMMARY_NAME).is_file() or changed_fields(config, adapter_dir / CONFIG_NAME):
        return None
    history = MetricsHistory.load(adapter_dir / HISTORY_NAME)
    return TrainResult(output_dir=output_dir, adapter_dir=adapter_dir, history=history, summary=read_summary(adapter_dir))


# ----- the model ----------------------------------------------------------------------------------
def lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")


def add_lora(config: TrainConfig, model):
    """Wrap a loaded base model with fresh, seeded LoRA adapters."""
    from peft import get_peft_model
    from transformers import set_seed

    check_target_modules(config, model)
    set_seed(config.seed)
    model.config.use_cache = False  # the KV cache is for generation only; training does not need it
    return get_peft_model(model, lora_config(config))


def training_arguments(config: TrainConfig, staging_dir: Path, speed: dict, bf16: bool, progress: bool = True,
                       bookkeeping: bool = True, baseline_eval: bool = False):
    """Trainer arguments for our path. ``bookkeeping=False`` (benchmarks) turns off evaluation and saving;
    ``baseline_eval`` scores the untrained model at step 0, so the validation curve starts at the base model."""
    import torch
    from transformers import TrainingArguments

    packing = speed["packing"]
    return TrainingArguments(
        output_dir=str(staging_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        optim="adamw_torch",
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        eval_strategy="steps" if bookkeeping else "no",  # there is always a validation set (file or split)
        eval_steps=config.eval_steps,
        eval_on_start=bookkeeping and baseline_eval,
        save_strategy="steps" if bookkeeping else "no",
        save_steps=config.save_steps,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to="none",
        disable_tqdm=not progress,
        remove_unused_columns=False,
        prediction_loss_only=True,
        # without packing, batch conversations of similar length so padding stays small
        train_sampling_strategy="random" if packing else "group_by_length",
        activation_checkpointing=speed["gradient_checkpointing"],
        activation_checkpointing_kwargs={"use_reentrant": False} if speed["gradient_checkpointing"] else None,
        use_liger_kernel=speed["use_liger"],
        torch_compile=speed["torch_compile"],
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def build_trainer(config: TrainConfig, model, tokenizer, train_set, eval_set, staging_dir: Path, speed: dict,
                  callbacks=(), progress: bool = True, meter: ThroughputMeter | None = None, bookkeeping: bool = True,
                  baseline_eval: bool = False):
    """The Trainer our path uses (shared by ``train`` and the benchmark)."""
    import torch

    bf16 = next(model.parameters()).dtype == torch.bfloat16
    return metered_trainer_class()(
        model=model,
        args=training_arguments(config, staging_dir, speed, bf16, progress, bookkeeping, baseline_eval),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=make_collator(tokenizer, speed["packing"], speed["attn_implementation"]),
        callbacks=list(callbacks),
        meter=meter,
    )


def evaluate_last_step(trainer) -> None:
    """End the validation curve at the last step. Trainer already scores it when the step falls on an
    evaluation step; a second pass would cost a full validation run and add a duplicate point."""
    step = trainer.state.global_step
    if not any("eval_loss" in entry and entry.get("step") == step for entry in trainer.state.log_history):
        trainer.evaluate()


def _out_of_memory(exc: Exception) -> TrainingError:
    return TrainingError(f"the GPU ran out of memory ({str(exc).splitlines()[0]}). Fix: lower batch_size (raise "
                         f"grad_accum to keep the effective batch), shorten max_seq_length, or set "
                         f"gradient_checkpointing=True.")


# ----- the one entry point -------------------------------------------------------------------------
def train(config: TrainConfig, callbacks=None, resume: bool = True, progress: bool = True) -> TrainResult:
    """Fine-tune ``config.model`` with LoRA; resume from the last complete checkpoint when there is one."""
    import torch

    from .models import load_model, load_tokenizer, pick_device, pick_dtype

    notices: list[str] = []
    config = check_config(config)
    check_data(config)
    device = pick_device()
    speed = resolve_speed(config, device, notices)
    output_dir = config.resolve(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = output_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of an interrupted save are never trusted
    done = finished_run(config, output_dir) if resume else None
    if done is not None:
        notice(f"this run already finished in {output_dir}; showing its saved result (train(config, resume=False) "
               f"trains again)")
        _share_history(callbacks, done.history, finished=True)
        return done
    start_from = resume_point(config, output_dir, resume, notices)

    tokenizer = load_tokenizer(config.model)
    tokenizer.padding_side = "right"  # left padding in training is a known cause of zero/NaN loss
    train_set, eval_set = load_splits(config, tokenizer, notices)
    base = load_model(config.model, device=device, dtype=pick_dtype(device),
                      attn_implementation=speed["attn_implementation"])
    model = add_lora(config, base)

    history = MetricsHistory(source="local", run=output_dir.name)
    if start_from is not None:
        saved = MetricsHistory.load(start_from / HISTORY_NAME)
        history.records = saved.records
    publisher = _checkpoint_callback_class()(config, output_dir, history)
    _share_history(callbacks, history)
    trainer = build_trainer(config, model, tokenizer, train_set, eval_set, staging, speed,
                            [publisher, *(callbacks or [])], progress,
                            baseline_eval=start_from is None)  # a resumed run already has its step-0 point
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
        evaluate_last_step(trainer)
    except torch.cuda.OutOfMemoryError as exc:
        raise _out_of_memory(exc) from None
    wall = time.perf_counter() - began
    shutil.rmtree(staging, ignore_errors=True)

    totals = trainer.meter.totals()
    memory, memory_kind = peak_memory()
    summary = {
        "model": config.model, "device": device, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "steps": int(trainer.state.global_step), "resumed_from_step": _step_of(start_from),
        "trained_tokens": totals["tokens"], "train_seconds": round(totals["seconds"], 3),
        "non_pad_tokens_per_second": round(totals["tokens_per_second"], 1),
        "peak_memory_bytes": memory, "peak_memory_kind": memory_kind, "wall_seconds": round(wall, 3),
        "final_train_loss": history.last("train"), "final_validation_loss": history.last("validation"),
        "trainable_parameters": trainable_parameters(model), "speed": speed, "notices": notices,
    }
    adapter_dir = output_dir / "adapter"
    with atomic_directory(adapter_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config.save(tmp / CONFIG_NAME)
        history.save(tmp / HISTORY_NAME)
        atomic_write_json(tmp / SUMMARY_NAME, summary)
    return TrainResult(output_dir=output_dir, adapter_dir=adapter_dir, history=history, summary=summary)


def _share_history(callbacks, history: MetricsHistory, finished: bool = False) -> None:
    """Callbacks with a ``history`` (the live loss plot) get the run's own, so a resumed run is shown whole."""
    for callback in callbacks or []:
        if isinstance(getattr(callback, "history", None), MetricsHistory):
            callback.history = history
            if finished:
                callback.on_train_end(None, None, None)


def describe_summary(summary: dict) -> str:
    """The run's headline numbers in a few lines (what the notebook and CLI show)."""
    validation = summary["final_validation_loss"]
    return "\n".join([
        f"steps: {summary['steps']} (resumed from step {summary['resumed_from_step']})" if summary["resumed_from_step"]
        else f"steps: {summary['steps']}",
        f"device: {summary['device']} ({summary['dtype']})",
        f"non-pad tokens/s: {summary['non_pad_tokens_per_second']:,.0f} ({summary['trained_tokens']:,} tokens)",
        f"peak memory: {summary['peak_memory_bytes'] / 2**30:.2f} GiB ({summary['peak_memory_kind']})",
        f"wall time: {summary['wall_seconds'] / 60:.1f} min",
        f"final train loss: {summary['final_train_loss']:.3f}",
        f"final validation loss: {validation:.3f}" if validation is not None else "final validation loss: -",
    ])


def _step_of(checkpoint: Path | None) -> int:
    return int(CHECKPOINT_RE.match(checkpoint.name).group(1)) if checkpoint else 0


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----- using the result ---------------------------------------------------------------------------
def load_trained(adapter_dir: str | os.PathLike, merge: bool = False):
    """(model, tokenizer): the base model named in the adapter's config with the adapter applied."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from .models import load_model

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file() or not (adapter_dir / CONFIG_NAME).is_file():
        raise TrainingError(f"{adapter_dir} is not a trained adapter folder (no adapter_config.json/{CONFIG_NAME}). "
                            f"Fix: train first (notebook 02 or `phi3lab train`) and pass <output_dir>/adapter.")
    config = TrainConfig.load(adapter_dir / CONFIG_NAME)
    base = load_model(config.model)
    try:
        model = PeftModel.from_pretrained(base, str(adapter_dir))
    except RuntimeError as exc:
        if "size mismatch" not in str(exc):
            raise
        raise TrainingError(f"the adapter in {adapter_dir} does not fit {config.model}: its weight shapes come from "
                            f"another base model. Fix: load it with the model it was trained on.") from None
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    model.eval()
    return (model.merge_and_unload() if merge else model), tokenizer


def merge_and_save(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Fold the adapter into the base weights and save a standalone model (atomically)."""
    model, tokenizer = load_trained(adapter_dir, merge=True)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.copy2(Path(adapter_dir) / CONFIG_NAME, tmp / CONFIG_NAME)
    return out_dir


def load_merged(model_dir: str | os.PathLike):
    """(model, tokenizer) from a folder written by ``merge_and_save``, on the best device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import pick_device, pick_dtype

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainingError(f"{model_dir} holds no merged model. Fix: run merge_and_save(adapter_dir, {model_dir}).")
    device = pick_device()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=pick_dtype(device)).to(device)
    return model.eval(), AutoTokenizer.from_pretrained(str(model_dir))


def read_summary(adapter_dir: str | os.PathLike) -> dict:
    return json.loads((Path(adapter_dir) / SUMMARY_NAME).read_text(encoding="utf-8"))
