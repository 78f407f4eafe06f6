"""The one typed configuration: hyperparameters and run settings.

Widgets, the CLI, local training and the Azure job all read a ``TrainConfig``. Every numeric
field carries its allowed range (``ge``/``le``), which the widgets reuse as slider bounds. Types are
strict: ``batch_size: true`` or ``max_steps: "4"`` is an error, not a silent 1 or 4 (an int is still
a valid float, and YAML's ``2e-4`` reads as a float: ``phi3lab.io.read_yaml_mapping``).
"""

from __future__ import annotations

import json
import os
import reprlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .io import atomic_write_text, read_yaml_mapping

PHI3_LORA_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


class TrainConfig(BaseModel):
    """Hyperparameters and run settings for one fine-tuning run (local or Azure)."""

    # strict: no coercion (true -> 1, "4" -> 4, 1 -> True); a new field of a type that YAML cannot
    # spell (a Path, an enum) needs a "before" validator that builds it.
    model_config = ConfigDict(validate_assignment=True, extra="forbid", strict=True)

    # What to train.
    model: str = Field(default="phi3-tiny-offline", description="catalog name (see phi3lab.models.CATALOG)")
    train_file: str = Field(default="data/train.jsonl", description="chat JSONL, relative to the repo root")
    validation_file: str | None = Field(default="data/validation.jsonl", description="None: automatic split")

    # Optimisation (AdamW on cross-entropy over assistant tokens).
    learning_rate: float = Field(default=2e-4, ge=1e-6, le=1e-2, description="AdamW learning rate")
    epochs: int = Field(default=1, ge=1, le=20, description="passes over the training set")
    batch_size: int = Field(default=4, ge=1, le=64, description="conversations per device step")
    grad_accum: int = Field(default=1, ge=1, le=64, description="steps accumulated per optimiser update")
    max_seq_length: int = Field(default=512, ge=32, le=131072, description="tokens per conversation")
    max_steps: int = Field(default=-1, ge=-1, le=1_000_000, description="-1: run all epochs")
    warmup_ratio: float = Field(default=0.05, ge=0.0, le=0.5)
    seed: int = Field(default=42, ge=0, le=2**31 - 1)

    # LoRA.
    lora_r: int = Field(default=16, ge=1, le=256, description="adapter rank")
    lora_alpha: int = Field(default=32, ge=1, le=512, description="adapter scale numerator")
    lora_dropout: float = Field(default=0.05, ge=0.0, le=0.5)
    target_modules: list[str] = Field(default_factory=lambda: list(PHI3_LORA_TARGETS), min_length=1)

    # Bookkeeping.
    eval_steps: int = Field(default=20, ge=1, le=100_000, description="validation loss every N steps")
    save_steps: int = Field(default=20, ge=1, le=100_000, description="checkpoint every N steps")
    logging_steps: int = Field(default=5, ge=1, le=100_000)
    run_name: str = Field(default="lora", description="the run's folder under the runs root (PHI3LAB_RUNS, default runs/)")

    # Speed switches; each falls back cleanly when unavailable (CPU, missing package).
    packing: bool = Field(default=True, description="padding-free batching")
    gradient_checkpointing: bool = False
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    use_liger: bool = Field(default=False, description="Liger fused kernels (CUDA only)")
    torch_compile: bool = False

    # Memory: how the frozen base model is stored, and the GPU these settings were planned for.
    quantization: Literal["none", "8bit", "4bit"] = Field(
        default="none", description="base weights unquantized, 8-bit, or 4-bit NF4 (QLoRA); CUDA + bitsandbytes only")
    planned_for: str | None = Field(default=None, description="GPU that default_config planned for; another GPU re-plans")

    @model_validator(mode="before")
    @classmethod
    def _renamed_output_dir(cls, values):
        """Configs saved before ``run_name`` named the folder as ``output_dir: runs/<name>``."""
        if isinstance(values, dict) and "output_dir" in values and "run_name" not in values:
            values = dict(values)
            old = str(values.pop("output_dir"))
            values["run_name"] = old.removeprefix("runs/").strip("/") or old
        return values

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_folder_name(cls, value: str) -> str:
        from .runs import RUN_NAME_RE

        if not RUN_NAME_RE.match(value) or ".." in value.split("/"):
            raise ValueError("use letters, digits, '.', '_' and '-' (sub-folders with '/'); runs live under the runs "
                             "root, so set PHI3LAB_RUNS to keep them elsewhere")
        return value

    @field_validator("quantization", mode="before")
    @classmethod
    def _quantization_spellings(cls, value):
        """Accept the usual spellings: 4-bit, nf4, int8, no, None, False."""
        spelling = str(value).strip().lower().replace("-", "").replace("_", "")
        aliases = {"4bit": "4bit", "nf4": "4bit", "qlora": "4bit", "8bit": "8bit", "int8": "8bit",
                   "none": "none", "no": "none", "false": "none", "": "none"}
        return aliases.get(spelling, value)

    @field_validator("target_modules")
    @classmethod
    def _no_blank_targets(cls, value: list[str]) -> list[str]:
        if any(not t.strip() for t in value):
            raise ValueError("target module names must not be empty")
        return value

    # ----- construction helpers -------------------------------------------------------
    @classmethod
    def create(cls, **values) -> TrainConfig:
        """Build a config, turning validation failures into one readable ConfigError."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None

    def update(self, **values) -> TrainConfig:
        """Return a copy with ``values`` changed, validated field by field."""
        return TrainConfig.create(**{**self.model_dump(), **values})

    def __setattr__(self, name, value):
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a YAML or JSON file (unknown keys are an error naming the key)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; save one with TrainConfig().save(path)")
        return cls.create(**read_yaml_mapping(path, ConfigError))

    def save(self, path: str | os.PathLike) -> Path:
        """Write YAML (or JSON when the name ends in .json) atomically."""
        path = Path(path)
        data = self.model_dump()
        text = json.dumps(data, indent=2) + "\n" if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
        return atomic_write_text(path, text)

    # ----- derived values ----------------------------------------------------------------
    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.grad_accum

    @property
    def run(self):
        """This run's folder (``phi3lab.runs.RunFolder``) under the runs root."""
        from .runs import RunFolder, runs_root

        return RunFolder(runs_root() / self.run_name)

    def resolve(self, relative: str | None) -> Path | None:
        """A path from this config, relative ones taken from the repository root."""
        from .paths import repo_path

        return None if relative is None else repo_path(relative)

    def summary(self) -> str:
        """A stable, human-readable summary (used as deterministic notebook output)."""
        rows = [f"{name:>24}: {value}" for name, value in self.model_dump().items()]
        return "\n".join(rows)


def field_range(name: str) -> tuple[float | None, float | None]:
    """The (min, max) a numeric field allows, read from its declaration."""
    low = high = None
    for item in TrainConfig.model_fields[name].metadata:
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    return low, high


# Values are quoted at most this long: a pasted file or a nested structure must not become the message.
_SHORT = reprlib.Repr()  # Python 3.11's Repr takes no arguments
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxset = 2, 3, 3, 3, 3
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40


def short_repr(value, width: int = 80) -> str:
    """``repr(value)``, built within bounds (never the whole of a huge value) and cut to ``width``."""
    text = _SHORT.repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def describe_validation_error(exc: ValidationError, most: int = 5) -> str:
    """The first ``most`` problems, one clause each (a list of a million bad items stays one short line)."""
    lines = []
    errors = exc.errors()
    for err in errors[:most]:
        name = short_repr(".".join(str(p) for p in err["loc"]), 60).strip("'\"") or "config"
        if err["type"] == "extra_forbidden":
            known = ", ".join(TrainConfig.model_fields)
            lines.append(f"unknown setting '{name}'. Known settings: {known}")
            continue
        allowed = ""
        if name in TrainConfig.model_fields:
            low, high = field_range(name)
            if low is not None or high is not None:
                allowed = f" Allowed range: {low} to {high}."
        lines.append(f"{name}={short_repr(err.get('input'))} is invalid: {err['msg']}.{allowed}")
    more = f"; and {len(errors) - most} more problem(s)" if len(errors) > most else ""
    return "; ".join(lines) + more


# Named starting points. "quick look" shows the mechanics in a couple of minutes on CPU;
# "workshop default" is what the notebooks use; "thorough" is for a GPU or a patient learner.
PRESETS: dict[str, dict] = {
    "quick look": {"epochs": 1, "max_steps": 30, "lora_r": 8, "lora_alpha": 16, "learning_rate": 5e-4,
                   "eval_steps": 10, "save_steps": 10},
    "workshop default": {},
    "thorough": {"epochs": 3, "lora_r": 32, "lora_alpha": 64, "learning_rate": 1e-4, "max_steps": -1,
                 "eval_steps": 50, "save_steps": 50},
}

# CI runs every notebook with this profile: a few steps, so nbval stays well inside its budget.
CI_PROFILE = {"max_steps": 4, "eval_steps": 4, "save_steps": 2, "logging_steps": 1, "max_seq_length": 256,
              "batch_size": 2}


def is_ci_profile() -> bool:
    return os.environ.get("PHI3LAB_PROFILE", "").lower() == "ci"


def default_config(preset: str = "workshop default", **overrides) -> TrainConfig:
    """The config a notebook or the CLI starts from: defaults, a preset, the CI profile, overrides.

    The model defaults to what ``phi3lab.models.default_model_name`` picks for this machine. On a CUDA GPU the
    memory settings (gradient checkpointing, 4-bit) come from the memory planner for that GPU, unless given
    as overrides.
    """
    from .models import default_model_name
    from .training.memory import fit_to_device

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'. Choose one of: {', '.join(PRESETS)}")
    values = {"model": default_model_name(), **PRESETS[preset]}
    if is_ci_profile():
        values.update(CI_PROFILE)
    values.update(overrides)
    return fit_to_device(TrainConfig.create(**values), keep=set(overrides))
