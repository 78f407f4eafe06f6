"""Local LoRA fine-tuning, one concern per module:

- ``chat_format``: the labels mask (loss on assistant tokens only), tokenisation, datasets, the collator;
- ``hf_objects``: the one mapping from ``TrainConfig`` to peft's ``LoraConfig`` and ``TrainingArguments``;
- ``trainer``: checks, speed switches, throughput, ``train`` and its summary;
- ``checkpoints``: atomic checkpoints and resume;
- ``distributed``: which process am I (rank), its device, main-process-only writing, the global batch;
- ``launch``: the command that starts one training process per GPU (DDP, FSDP, several machines);
- ``artifacts``: loading, merging and reading a trained run;
- ``planning``: steps, trainable parameters and a timed step, before training;
- ``memory``: the memory planner (will it fit on this GPU, what makes it fit) and memory measurement.

``from phi3lab.training import train, load_trained, ...`` keeps working: each name is imported from
its module on first use, so importing ``artifacts`` or ``chat_format`` never loads the trainer.
"""

from __future__ import annotations

import importlib
import warnings

# peft still calls a transformers property renamed in v5; the warning is noise for learners.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

# public name -> the module that owns it
_OWNERS = {
    "TrainingError": "errors", "notice": "errors",
    "IGNORE_INDEX": "chat_format", "VALIDATION_FRACTION": "chat_format", "assistant_char_spans": "chat_format",
    "tokenize_conversation": "chat_format", "label_preview": "chat_format", "build_dataset": "chat_format", "training_rows": "chat_format",
    "load_splits": "chat_format", "make_collator": "chat_format", "automatic_validation_size": "chat_format",
    "lora_config": "hf_objects", "add_lora": "hf_objects", "check_target_modules": "hf_objects",
    "training_arguments": "hf_objects", "speed_arguments": "hf_objects",
    "TrainResult": "trainer", "train": "trainer", "describe_summary": "trainer", "resolve_speed": "trainer",
    "build_trainer": "trainer", "evaluate_last_step": "trainer", "ThroughputMeter": "trainer",
    "metered_trainer_class": "trainer", "sequence_lengths": "trainer", "peak_memory": "memory",
    "check_config": "trainer", "check_data": "trainer", "trainable_parameters": "trainer",
    "complete_checkpoints": "checkpoints", "resume_point": "checkpoints",
    "ranks": "distributed", "is_main_process": "distributed", "launch_command": "launch",
    "load_trained": "artifacts", "merge_and_save": "artifacts", "load_merged": "artifacts",
    "read_summary": "artifacts",
    "RunPlan": "planning", "plan_run": "planning", "measure_step_seconds": "planning",
    "steps_per_epoch": "planning", "training_examples": "planning", "lora_parameter_count": "planning",
    "weightless_model": "planning",
    "MemoryPlan": "memory", "plan_memory": "memory", "fit_to_device": "memory", "KNOWN_GPUS": "memory",
}
__all__ = sorted(_OWNERS)


def __getattr__(name: str):
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{owner}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_OWNERS})
