"""Planning a run before training it: how many steps, how many trainable parameters, how long.

The hyperparameter panel shows these numbers; they come from the same dataset building, collator,
LoRA set-up and validation split that training uses, so the plan describes the run ``train`` will do.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from .chat_format import automatic_validation_size, make_collator, training_rows
from .hf_objects import add_lora


@dataclass(frozen=True)
class RunPlan:
    """The numbers of one planned run; None where they cannot be known yet (no data file, no timing)."""

    trainable_parameters: int | None
    effective_batch_size: int
    training_examples: int | None
    steps_per_epoch: int | None
    total_steps: int | None
    seconds_per_step: float | None
    estimated_seconds: float | None


def plan_run(config: TrainConfig, shape_model=None, seconds_per_step: float | None = None) -> RunPlan:
    """Trainable parameters (from ``shape_model``, weightless is enough), steps and, once a step was timed,
    the estimated training time."""
    examples = training_examples(config)
    per_epoch = steps_per_epoch(examples, config.batch_size, config.grad_accum) if examples else None
    total = config.max_steps if config.max_steps > 0 else (per_epoch * config.epochs if per_epoch else None)
    return RunPlan(
        trainable_parameters=lora_parameter_count(shape_model, config) if shape_model is not None else None,
        effective_batch_size=config.effective_batch_size,
        training_examples=examples,
        steps_per_epoch=per_epoch,
        total_steps=total,
        seconds_per_step=seconds_per_step,
        estimated_seconds=total * seconds_per_step if total and seconds_per_step else None,
    )


# ----- shapes ------------------------------------------------------------------------------------
def weightless_model(name: str):
    """The model's architecture on the meta device (no weights, no memory): from its config file, or offline from
    the catalog's architecture (same layers and sizes; enough for layer names and parameter counts)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Phi3Config

    from ..models import get_spec, model_source

    try:
        config = AutoConfig.from_pretrained(model_source(name))
    except Exception:  # offline without a cached hub config
        config = Phi3Config(**get_spec(name).architecture)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def lora_parameter_count(model, config: TrainConfig) -> int:
    """Parameters LoRA adds: r x (in + out) for every targeted linear layer (A is r x in, B is out x r)."""
    import torch

    return sum(config.lora_r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in config.target_modules)


# ----- steps ---------------------------------------------------------------------------------------
def training_examples(config: TrainConfig) -> int | None:
    """Conversations training learns from: the training file, less the automatic validation split if any."""
    path = config.resolve(config.train_file)
    if path is None or not Path(path).is_file():
        return None
    with open(path, "rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - automatic_validation_size(lines) if config.validation_file is None else lines


def steps_per_epoch(examples: int, batch_size: int, grad_accum: int) -> int:
    """Optimiser steps in one pass: batches of ``batch_size``, ``grad_accum`` batches per step (as Trainer counts)."""
    return max(math.ceil(math.ceil(examples / batch_size) / grad_accum), 1)


# ----- timing ----------------------------------------------------------------------------------------
def measure_step_seconds(config: TrainConfig, model=None) -> float:
    """Seconds for one optimiser step (batch_size x grad_accum conversations) of this config on this device.

    The first step pays one-off costs (allocations, kernel selection), so a second one is timed. A
    ``model`` passed in gets adapters for the measurement only and is left as it was.
    """
    import torch

    from ..models import load_tokenizer, pick_device
    from .trainer import load_base_model, resolve_speed, synchronize

    device = pick_device()
    speed = resolve_speed(config, device)
    batch = first_batch(config, load_tokenizer(config.model), speed)
    base = model if model is not None else load_base_model(config, device, speed)
    with lora_added(config, base) as peft_model:
        target = next(peft_model.parameters()).device
        batch = {k: v.to(target) if hasattr(v, "to") else v for k, v in batch.items()}
        optimiser = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.learning_rate)
        peft_model.train()
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            for _ in range(config.grad_accum):
                peft_model(**batch).loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            synchronize()
            seconds.append(time.perf_counter() - start)
    return seconds[-1]


def first_batch(config: TrainConfig, tokenizer, speed: dict) -> dict:
    """The first ``batch_size`` conversations training learns from, tokenized and collated as training does."""
    from ..data import read_conversations

    conversations = read_conversations(config.resolve(config.train_file))
    rows = training_rows(tokenizer, conversations, config.max_seq_length, limit=config.batch_size)
    return make_collator(tokenizer, speed["packing"], speed["attn_implementation"])(rows)


@contextlib.contextmanager
def lora_added(config: TrainConfig, model):
    """``model`` with fresh adapters for the block; afterwards they are removed and the model is as it was."""
    use_cache = model.config.use_cache
    peft_model = add_lora(config, model)
    try:
        yield peft_model
    finally:
        peft_model.unload()
        model.config.use_cache = use_cache
