"""The one mapping from a ``TrainConfig`` to Hugging Face objects: peft's ``LoraConfig`` and ``TrainingArguments``.

Chat training, the run planner's timed step and the intent classifier all build their adapters and
Trainer arguments here, so a hyperparameter means the same thing everywhere; a caller passes only
what differs for its task (e.g. the classifier's task type and trained head) as overrides.
"""

from __future__ import annotations

from pathlib import Path

from ..config import TrainConfig
from .errors import TrainingError


def lora_config(config: TrainConfig, **overrides):
    """Adapters of rank ``lora_r`` on ``target_modules`` (a causal language model unless overridden)."""
    from peft import LoraConfig

    values = dict(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                  target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    return LoraConfig(**{**values, **overrides})


def check_target_modules(config: TrainConfig, model) -> None:
    """Refuse target module names that match none of the model's linear layers, listing the real ones."""
    from ..models import linear_layer_names

    available = linear_layer_names(model)
    missing = [t for t in config.target_modules if t not in available]
    if missing:
        raise TrainingError(
            f"target_modules {missing} are not linear layers of {config.model}. Its linear layers are: "
            f"{', '.join(available)}. Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj, so names "
            f"like q_proj or up_proj match nothing.")


def add_lora(config: TrainConfig, model, **overrides):
    """Wrap a loaded model with fresh, seeded LoRA adapters (``overrides`` go to ``LoraConfig``)."""
    from peft import get_peft_model
    from transformers import set_seed

    check_target_modules(config, model)
    set_seed(config.seed)
    model.config.use_cache = False  # the KV cache is for generation only; training does not need it
    return get_peft_model(model, lora_config(config, **overrides))


def precision_arguments(precision) -> dict:
    """Trainer's mixed-precision flags for a ``phi3lab.devices.Precision``: ``bf16`` autocast where the GPU has it
    natively, ``fp16`` autocast with loss scaling on a T4/V100, neither in fp32 (CPU, Apple's MPS)."""
    return {"bf16": precision.bf16, "fp16": precision.fp16}


def device_precision_arguments() -> dict:
    """``precision_arguments`` for the device this process trains on (chat training and the classifier alike)."""
    from ..devices import detect_device, pick_precision

    return precision_arguments(pick_precision(detect_device()))


def keep_trainable_in_fp32(model) -> None:
    """fp16 loss scaling cannot unscale fp16 gradients, so trained weights (adapters, a new head) stay fp32."""
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def speed_arguments(speed: dict) -> dict:
    """``TrainingArguments`` values for the speed switches that can be used here (see ``resolve_speed``)."""
    checkpointing = speed["gradient_checkpointing"]
    return {
        # without packing, batch conversations of similar length so padding stays small
        "train_sampling_strategy": "random" if speed["packing"] else "group_by_length",
        "activation_checkpointing": checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False} if checkpointing else None,
        "use_liger_kernel": speed["use_liger"],
        "torch_compile": speed["torch_compile"],
    }


def training_arguments(config: TrainConfig, output_dir: str | Path, bf16: bool, progress: bool = True, **overrides):
    """Trainer arguments from the config: AdamW on cross-entropy, validation loss every ``eval_steps``,
    a checkpoint every ``save_steps``. ``overrides`` replace single values (the caller's task settings)."""
    import torch
    from transformers import TrainingArguments

    values = dict(
        output_dir=str(output_dir),
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
        eval_strategy="steps",  # there is always a validation set (a file or the automatic split)
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to="none",
        disable_tqdm=not progress,
        remove_unused_columns=False,
        prediction_loss_only=True,
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # several processes (DDP): every LoRA weight gets a gradient, so no search for unused ones each step
        ddp_find_unused_parameters=False,
    )
    return TrainingArguments(**{**values, **overrides})
