"""Local LoRA fine-tuning on top of transformers' Trainer and peft.

One code path serves the notebook, the CLI (``phi3lab train --config``) and the benchmark:
``train(config)`` checks everything it can before the first step, writes the run's ``config.yaml``,
builds a peft model, tokenizes the chat data with the model's own template (loss on assistant tokens
only), trains with AdamW on cross-entropy, and writes checkpoints and the final adapter into the run
folder (``config.run``), each in one atomic rename.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig
from ..errors import file_errors
from ..history import MetricsHistory
from ..io import atomic_directory, atomic_write_json
from ..runs import CONFIG_NAME, HISTORY_NAME, SUMMARY_NAME, RunFolder
from .chat_format import load_splits, make_collator
from .checkpoints import changed_fields, checkpoint_publisher, resume_point, step_of
from .distributed import (
    adapter_state_dict,
    announce_launch,
    barrier,
    check_same_processes,
    describe_launch,
    join,
    launch_record,
    launch_summary,
    on_main,
    ranks,
)
from .errors import TrainingError, notice
from .hf_objects import add_lora, device_precision_arguments, speed_arguments, training_arguments
from .memory import (
    GB,
    candidate_changes,
    describe_change,
    describe_memory,
    memory_now,
    memory_summary,
    peak_memory,
    plan_memory,
    replan_for_device,
)


@dataclass
class TrainResult:
    output_dir: Path  # the run folder
    adapter_dir: Path
    history: MetricsHistory
    summary: dict = field(default_factory=dict)

    @property
    def run(self) -> RunFolder:
        return RunFolder(Path(self.output_dir))


# ----- checks before any compute ------------------------------------------------------------------
def check_config(config: TrainConfig) -> TrainConfig:
    """Re-validate the config and check it against the model's context length."""
    from ..models import get_spec

    config = TrainConfig.create(**config.model_dump())  # catches values set around validation
    spec = get_spec(config.model)
    if config.max_seq_length > spec.context_length:
        raise TrainingError(f"max_seq_length={config.max_seq_length} is above {config.model}'s context length of "
                            f"{spec.context_length} tokens. Fix: set max_seq_length to at most {spec.context_length}.")
    return config


def check_data(config: TrainConfig) -> None:
    """Validate the chat files before loading the model (every bad line is named)."""
    from ..data import validate

    for name in ("train_file", "validation_file"):
        path = config.resolve(getattr(config, name))
        if path is not None:
            validate(path).raise_for_errors()


# ----- speed switches ---------------------------------------------------------------------------
def resolve_speed(config: TrainConfig, device: str, notices: list[str] | None = None) -> dict:
    """The speed and memory settings that can actually be used here; each fallback gets a one-line notice."""
    from transformers.utils import is_flash_attn_2_available

    from ..devices import DeviceInfo, detect_device, quantization_unavailable

    cuda = device == "cuda"
    quantization = config.quantization
    problem = quantization_unavailable(quantization, detect_device() if cuda else DeviceInfo(device, device, 0))
    if problem:
        notice(problem, notices)
        quantization = "none"
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
            "torch_compile": compile_, "gradient_checkpointing": config.gradient_checkpointing,
            "quantization": quantization}



# ----- measuring ---------------------------------------------------------------------------------
class ThroughputMeter:
    """Counts non-pad tokens and times optimiser steps (data loading, evaluation and saving excluded)."""

    def __init__(self):
        self.steps: list[dict] = []  # one row per optimiser step: seconds, tokens, sum of squared lengths
        self._tokens = self._squares = 0
        self._start = None
        self.largest_batch = 0  # positions (pad included) of the largest micro-batch: the memory peak's size

    def count(self, inputs) -> None:
        lengths = sequence_lengths(inputs)
        self._tokens += sum(lengths)
        self._squares += sum(n * n for n in lengths)
        self.largest_batch = max(self.largest_batch, int(inputs["input_ids"].numel()))

    def begin(self) -> None:
        synchronize()
        self._start = time.perf_counter()

    def end(self) -> None:
        synchronize()
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


def synchronize() -> None:
    """Wait for queued GPU work, so a wall-clock time covers it (nothing to wait for on CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def metered_trainer_class(base=None):
    """``base`` (default: transformers' Trainer; the benchmark passes TRL's SFTTrainer) that also counts tokens."""
    from transformers import Trainer, TrainerCallback

    class MeteredTrainer(base or Trainer):
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


# ----- the model and the Trainer ----------------------------------------------------------------
def load_base_model(config: TrainConfig, device: str, speed: dict):
    """The base model as training uses it: the device's precision, the attention that works here and, on a
    CUDA GPU, the quantization asked for (then prepared for k-bit training: norms and embeddings in fp32,
    input gradients on for checkpointing)."""
    from ..models import load_model, pick_dtype

    model = load_model(config.model, device=device, dtype=pick_dtype(device),
                       attn_implementation=speed["attn_implementation"], quantization=speed.get("quantization", "none"))
    if speed.get("quantization", "none") != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=speed["gradient_checkpointing"],
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def build_trainer(config: TrainConfig, model, tokenizer, train_set, eval_set, staging_dir: Path, speed: dict,
                  callbacks=(), progress: bool = True, meter: ThroughputMeter | None = None, bookkeeping: bool = True,
                  baseline_eval: bool = False):
    """The Trainer our path uses (shared by ``train`` and the benchmark). ``bookkeeping=False`` (benchmarks)
    turns off evaluation and saving; ``baseline_eval`` scores the untrained model at step 0, so the
    validation curve starts at the base model."""
    bookkeeping_off = {} if bookkeeping else {"eval_strategy": "no", "save_strategy": "no"}
    flags = device_precision_arguments()
    args = training_arguments(config, staging_dir, flags.pop("bf16"), progress, eval_on_start=bookkeeping and baseline_eval,
                              **flags, **speed_arguments(speed), **bookkeeping_off)
    trainer = metered_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=make_collator(tokenizer, speed["packing"], speed["attn_implementation"]),
        callbacks=list(callbacks),
        meter=meter,
    )
    if not progress:  # without its bar Trainer prints every log as a raw dict; the run's history keeps them
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


def evaluate_last_step(trainer) -> None:
    """End the validation curve at the last step. Trainer already scores it when the step falls on an
    evaluation step; a second pass would cost a full validation run and add a duplicate point."""
    step = trainer.state.global_step
    if not any("eval_loss" in entry and entry.get("step") == step for entry in trainer.state.log_history):
        trainer.evaluate()


def out_of_memory_error(exc: Exception, config: TrainConfig, device) -> TrainingError:
    """The OOM as one message naming the memory planner's change (the first that fits, or else the next one)."""
    plan = plan_memory(config, device)
    change = plan.suggested or next(candidate_changes(config, device), None)
    fix = (f"set {describe_change(change)} (the memory planner's suggestion)" if change else
           "use a smaller model (phi3-tiny-offline) or a bigger GPU")
    return TrainingError(f"the GPU ran out of memory ({str(exc).splitlines()[0]}); the planner estimates "
                         f"{plan.needed / GB:.1f} GB for this config on {device.label}. Fix: {fix}.")


# ----- the one entry point -------------------------------------------------------------------------
def train(config: TrainConfig, callbacks=None, resume: bool = True, progress: bool = True) -> TrainResult:
    """Fine-tune ``config.model`` with LoRA into ``config.run``; resume from its last complete checkpoint.

    Launched as several processes (``accelerate launch``, torchrun, Azure ML), each process trains on its GPU
    (its local rank) and its share of the data; the main process alone writes the run folder.
    """
    import torch

    from ..devices import detect_device
    from ..models import load_tokenizer

    notices: list[str] = []
    config = check_config(config)
    check_data(config)
    place = ranks()
    device = join(place)  # before the model loads: GPU k for local rank k
    device_info = detect_device()
    config = replan_for_device(config, device_info, notices)
    speed = resolve_speed(config, device, notices)
    run = config.run
    launch = announce_launch(launch_record(config, place), notices)
    done, start_from = on_main(prepare_run, config, run, resume, place, notices)
    if done is not None:
        _share_history(callbacks, done.history, finished=True)
        return done

    tokenizer = load_tokenizer(config.model)
    tokenizer.padding_side = "right"  # left padding in training is a known cause of zero/NaN loss
    train_set, eval_set = load_splits(config, tokenizer, notices)
    model = add_lora(config, load_base_model(config, device, speed))

    history = MetricsHistory(source="local", run=run.name)
    if start_from is not None:
        history.records = MetricsHistory.load(start_from / HISTORY_NAME).records
    _share_history(callbacks, history)
    trainer = build_trainer(config, model, tokenizer, train_set, eval_set, run.staging_dir, speed,
                            [checkpoint_publisher(config, run, history, launch), *(callbacks or [])], progress,
                            baseline_eval=start_from is None)  # a resumed run already has its step-0 point
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = memory_now()
    began = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
        evaluate_last_step(trainer)
    except torch.cuda.OutOfMemoryError as exc:
        raise out_of_memory_error(exc, config, device_info) from None
    wall = time.perf_counter() - began

    summary = run_summary(config, trainer, model, device, speed, history, notices, start_from, wall)
    summary["memory"] = memory_summary(config, device_info, before, trainer.meter.largest_batch)
    summary.update(launch_summary(launch, summary))
    state_dict = adapter_state_dict(trainer)  # FSDP: gathered by every process
    if place.main:
        shutil.rmtree(run.staging_dir, ignore_errors=True)
        save_adapter(run, config, model, tokenizer, history, summary, state_dict)
    barrier()  # the other processes return once the adapter is there
    return TrainResult(output_dir=run.folder, adapter_dir=run.adapter_dir, history=history, summary=summary)


def prepare_run(config: TrainConfig, run: RunFolder, resume: bool, place, notices: list[str]):
    """The run folder made ready (on the main process only): (the saved result if this run already finished,
    None) or (None, the checkpoint to resume from or None); old checkpoints go when starting over."""
    with file_errors(run.folder, "create", TrainingError):
        run.folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run.staging_dir, ignore_errors=True)  # leftovers of an interrupted save are never trusted
    done = finished_run(config, run) if resume else None
    if done is not None:
        notice(f"this run already finished in {run.folder}; showing its saved result (train(config, resume=False) "
               f"trains again)")
        return done, None
    start_from = resume_point(config, run, resume, notices)
    if start_from is not None:
        check_same_processes(start_from, place)
    config.save(run.config_file)  # the hand-off notebooks 03-05 read, there before the first step
    return None, start_from


def finished_run(config: TrainConfig, run: RunFolder) -> TrainResult | None:
    """The saved result when this very run already finished (the adapter is written last)."""
    if not run.summary_file.is_file() or changed_fields(config, run.adapter_dir / CONFIG_NAME):
        return None
    return TrainResult(output_dir=run.folder, adapter_dir=run.adapter_dir, history=run.history(),
                       summary=run.summary())


def save_adapter(run: RunFolder, config: TrainConfig, model, tokenizer, history: MetricsHistory,
                 summary: dict, state_dict: dict | None = None) -> None:
    """The final adapter with its tokenizer, config, history and summary, published in one rename
    (``state_dict``: the adapter weights gathered from all processes, when FSDP shards them)."""
    with atomic_directory(run.adapter_dir) as tmp:
        model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
        tokenizer.save_pretrained(tmp)
        config.save(tmp / CONFIG_NAME)
        history.save(tmp / HISTORY_NAME)
        atomic_write_json(tmp / SUMMARY_NAME, summary)


def _share_history(callbacks, history: MetricsHistory, finished: bool = False) -> None:
    """Callbacks with a ``history`` (the live loss plot) get the run's own, so a resumed run is shown whole."""
    for callback in callbacks or []:
        if isinstance(getattr(callback, "history", None), MetricsHistory):
            callback.history = history
            if finished:
                callback.on_train_end(None, None, None)


# ----- the summary -----------------------------------------------------------------------------------
def run_summary(config: TrainConfig, trainer, model, device: str, speed: dict, history: MetricsHistory,
                notices: list[str], start_from: Path | None, wall_seconds: float) -> dict:
    """The run's measured numbers, saved as ``summary.json`` beside the adapter."""
    totals = trainer.meter.totals()
    memory, memory_kind = peak_memory()
    return {
        "model": config.model, "device": device, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "steps": int(trainer.state.global_step), "resumed_from_step": step_of(start_from),
        "trained_tokens": totals["tokens"], "train_seconds": round(totals["seconds"], 3),
        "non_pad_tokens_per_second": round(totals["tokens_per_second"], 1),
        "peak_memory_bytes": memory, "peak_memory_kind": memory_kind, "wall_seconds": round(wall_seconds, 3),
        "final_train_loss": history.last("train"), "final_validation_loss": history.last("validation"),
        "trainable_parameters": trainable_parameters(model), "speed": speed, "notices": notices,
    }


def describe_summary(summary: dict) -> str:
    """The run's headline numbers in a few lines (what the notebook and CLI show)."""
    validation = summary["final_validation_loss"]
    memory = describe_memory(summary["memory"]) if "memory" in summary else [
        f"peak memory: {summary['peak_memory_bytes'] / GB:.2f} GB ({summary['peak_memory_kind']})"]
    return "\n".join([
        f"steps: {summary['steps']} (resumed from step {summary['resumed_from_step']})" if summary["resumed_from_step"]
        else f"steps: {summary['steps']}",
        f"device: {summary['device']} ({summary['dtype']})",
        *([describe_launch(summary)] if "global_batch_size" in summary else []),
        f"non-pad tokens/s: {summary['non_pad_tokens_per_second']:,.0f} ({summary['trained_tokens']:,} tokens)",
        *memory,
        f"wall time: {summary['wall_seconds'] / 60:.1f} min",
        f"final train loss: {summary['final_train_loss']:.3f}",
        f"final validation loss: {validation:.3f}" if validation is not None else "final validation loss: -",
    ])


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
