"""The memory planner: will this config fit on this GPU, and if not, what change makes it fit?

Peak memory of one LoRA training step, part by part (bytes):

- **base weights**: every parameter in the load dtype (2 bytes in bf16/fp16, 4 in fp32). 4-bit NF4 with
  double quantization stores a linear weight in 0.516 bytes (4 bits + one 8-bit scale per 64 weights +
  one fp32 scale per 256 scales), 8-bit in 1 byte; embeddings and the output layer stay unquantized and
  ``prepare_model_for_kbit_training`` upcasts them to fp32.
- **LoRA**: r x (in + out) parameters per adapted layer, fp32 (peft keeps adapters in fp32), with their
  gradients and AdamW's two moments: 16 bytes per parameter.
- **activations**: what autograd keeps from the forward pass for the backward, per token and layer
  (``a`` = 2 bytes in 16-bit, 4 in fp32): 8·hidden (both RMSNorms upcast their input to fp32) +
  1.5a·(hidden + q/k/v width) (attention's inputs and output) + 3a·intermediate (MLP) + 4·heads
  (attention's log-sum-exp) + 136 (small per-token tensors), plus for each
  adapted layer 8 bytes per input feature (fp32 copy of its input and the dropout mask; 4 without
  dropout). With gradient checkpointing a layer keeps only its input (a·hidden) and one layer is
  recomputed at a time. These coefficients are measured on transformers' Phi-3 code with peft
  (``tests/test_memory.py`` checks them against autograd's saved tensors).
- **logits and loss**: the loss upcasts the logits to fp32: its softmax output, its gradient and the
  gradient of its input, 12 bytes per token per vocabulary entry at the start of the backward.
- **backward buffers**: gradients of activations in flight, about a·(4·hidden + 4·intermediate) per token.
- **CUDA context**: about 0.5 GB that CUDA takes before any tensor (not in PyTorch's own counters).

The worst case is planned: every conversation of a batch as long as ``max_seq_length``. A plan fits
when its total, with 10% for the allocator's fragmentation, is within the device's memory.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field, replace

from ..config import TrainConfig
from ..devices import DeviceInfo, detect_device, pick_precision, quantization_unavailable
from .errors import notice

GB = 1e9
CUDA_CONTEXT_BYTES = int(0.5 * GB)  # typical for PyTorch 2.x (CUDA context + cuBLAS/cuDNN workspaces)
FRAGMENTATION = 1.10  # reserved / allocated at the peak: the caching allocator's unusable slack
QUANTIZED_BYTES = {"none": None, "8bit": 1.0, "4bit": 0.516}  # bytes per linear weight
LORA_STATE_BYTES = 16  # fp32 weight + gradient + AdamW's two moments
LOGITS_BYTES = 12  # fp32 softmax output + its gradient + the gradient of its input, per token and vocab entry
MIN_SEQ_LENGTH = 256  # shorter than this the course's conversations lose their answers


@dataclass(frozen=True)
class GpuSpec:
    """A GPU learners use, with the memory PyTorch reports for it (data-sheet capacity less what the driver
    keeps). Capacities and compute capabilities from NVIDIA's data sheets and its CUDA GPUs page
    (developer.nvidia.com/cuda-gpus); reported totals are typical values. Checked 2026-12-01; on a real GPU
    the planner uses the live values instead."""

    name: str
    total_memory: int
    compute_capability: tuple[int, int]

    def device(self) -> DeviceInfo:
        return DeviceInfo("cuda", self.name, self.total_memory, self.compute_capability,
                          native_bf16=self.compute_capability >= (8, 0))


KNOWN_GPUS: dict[str, GpuSpec] = {spec.name: spec for spec in [
    GpuSpec("Tesla T4", int(15.83 * GB), (7, 5)),  # free Colab; 16 GB, no native bf16
    GpuSpec("Tesla V100-SXM2-16GB", int(16.93 * GB), (7, 0)),
    GpuSpec("NVIDIA GeForce RTX 3060", int(12.62 * GB), (8, 6)),
    GpuSpec("NVIDIA L4", int(23.66 * GB), (8, 9)),
    GpuSpec("NVIDIA A10G", int(23.68 * GB), (8, 6)),
    GpuSpec("NVIDIA GeForce RTX 4090", int(25.39 * GB), (8, 9)),
    GpuSpec("NVIDIA A100-SXM4-40GB", int(42.41 * GB), (8, 0)),
    GpuSpec("NVIDIA A100-SXM4-80GB", int(85.09 * GB), (8, 0)),
    GpuSpec("NVIDIA H100 80GB HBM3", int(84.93 * GB), (9, 0)),
]}


# ----- the model's shape ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool

    @classmethod
    def of(cls, name: str) -> ModelShape:
        from ..models import get_spec

        a = get_spec(name).architecture
        return cls(a["vocab_size"], a["hidden_size"], a["intermediate_size"], a["num_hidden_layers"],
                   a["num_attention_heads"], a["num_key_value_heads"], a["tie_word_embeddings"])

    @property
    def qkv_width(self) -> int:
        head_dim = self.hidden // self.heads
        return (self.heads + 2 * self.kv_heads) * head_dim

    def linear_layers(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer in one decoder layer."""
        return {"qkv_proj": (self.hidden, self.qkv_width), "o_proj": (self.hidden, self.hidden),
                "gate_up_proj": (self.hidden, 2 * self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    @property
    def linear_parameters(self) -> int:
        return self.layers * sum(i * o for i, o in self.linear_layers().values())

    @property
    def other_parameters(self) -> int:
        """Embeddings, output layer (unless tied) and norms: never quantized."""
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + (2 * self.layers + 1) * self.hidden


# ----- the plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    device: DeviceInfo
    parts: dict[str, int]  # bytes per part, in the order of the module's docstring
    tokens: int  # tokens in the planned micro-batch
    suggestion: str | None = None  # the change that makes it fit, when it does not
    suggested: dict = field(default_factory=dict)  # that change as config values

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def needed(self) -> int:
        """Memory the device must have: the total with the allocator's slack."""
        return int(self.total * FRAGMENTATION)

    @property
    def fits(self) -> bool:
        return self.needed <= self.device.total_memory

    def describe(self) -> str:
        """One line: fits or not on which device, the numbers, and the change that makes it fit."""
        where = "this GPU" if self.device.kind == "cuda" else f"this machine's memory ({self.device.kind.upper()})"
        head = (f"{'fits on' if self.fits else 'does not fit on'} {where}, {self.device.label}: "
                f"about {self.needed / GB:.1f} GB needed")
        return head if self.fits or not self.suggestion else f"{head}. To fit: {self.suggestion}"

    def table(self) -> str:
        rows = [f"{name:>22}: {size / GB:6.2f} GB" for name, size in self.parts.items()]
        return "\n".join(rows + [f"{'total (+10% slack)':>22}: {self.needed / GB:6.2f} GB of "
                                 f"{self.device.total_memory / GB:.1f} GB"])


def plan_memory(config: TrainConfig, device: DeviceInfo | None = None, tokens: int | None = None,
                suggest: bool = True) -> MemoryPlan:
    """Peak memory of training ``config`` on ``device`` (default: this machine's) for a micro-batch of
    ``tokens`` (default: the worst case, ``batch_size x max_seq_length``)."""
    device = device or detect_device()
    plan = MemoryPlan(device, estimate_parts(config, device, tokens), tokens or worst_case_tokens(config))
    if suggest and not plan.fits:
        change = change_that_fits(config, device)
        if change is None:
            plan = replace(plan, suggestion=f"nothing in the config makes {config.model} fit; use a smaller model "
                                            f"(phi3-tiny-offline) or a bigger GPU (notebook 03 trains in Azure)")
        else:
            fixed = plan_memory(config.update(**change), device, suggest=False)
            plan = replace(plan, suggestion=f"set {describe_change(change)} (about {fixed.needed / GB:.1f} GB)",
                           suggested=change)
    return plan


def worst_case_tokens(config: TrainConfig) -> int:
    return config.batch_size * config.max_seq_length


def effective_quantization(config: TrainConfig, device: DeviceInfo) -> str:
    return "none" if quantization_unavailable(config.quantization, device) else config.quantization


def estimate_parts(config: TrainConfig, device: DeviceInfo, tokens: int | None = None) -> dict[str, int]:
    shape = ModelShape.of(config.model)
    tokens = tokens or worst_case_tokens(config)
    quantization = effective_quantization(config, device)
    act = pick_precision(device).bytes_per_weight  # activations are in the weights' precision
    layer = activation_bytes_per_token(shape, config, act)
    if config.gradient_checkpointing:  # each layer keeps its input; one layer is recomputed at a time
        activations = tokens * (shape.layers * act * shape.hidden + layer)
    else:
        activations = tokens * shape.layers * layer
    parts = {
        "base weights": base_weight_bytes(shape, quantization, act),
        "LoRA + grads + AdamW": lora_parameters(shape, config) * LORA_STATE_BYTES,
        "activations": activations,
        "logits and loss": tokens * (LOGITS_BYTES * shape.vocab + 4 * shape.hidden),
        "backward buffers": tokens * act * 4 * (shape.hidden + shape.intermediate),
    }
    if device.kind == "cuda":
        parts["CUDA context"] = CUDA_CONTEXT_BYTES
    return parts


def base_weight_bytes(shape: ModelShape, quantization: str, weight_bytes: int) -> int:
    per_linear = QUANTIZED_BYTES[quantization]
    if per_linear is None:
        return (shape.linear_parameters + shape.other_parameters) * weight_bytes
    # prepare_model_for_kbit_training upcasts what is not quantized to fp32
    return int(shape.linear_parameters * per_linear) + shape.other_parameters * 4


def lora_parameters(shape: ModelShape, config: TrainConfig) -> int:
    return shape.layers * sum(config.lora_r * (i + o) for name, (i, o) in shape.linear_layers().items()
                              if name in config.target_modules)


def activation_bytes_per_token(shape: ModelShape, config: TrainConfig, act: int) -> int:
    """Bytes autograd keeps per token in one decoder layer (coefficients measured, see the docstring)."""
    base = (8 * shape.hidden + 3 * act * (shape.hidden + shape.qkv_width) // 2 + 3 * act * shape.intermediate
            + 4 * shape.heads + 136)
    per_input = 8 if config.lora_dropout > 0 else 4
    adapters = sum(per_input * i for name, (i, _) in shape.linear_layers().items() if name in config.target_modules)
    return base + adapters


# ----- making it fit ---------------------------------------------------------------------------------
def candidate_changes(config: TrainConfig, device: DeviceInfo):
    """Changes in the order they cost least: checkpointing (≈30% slower), 4-bit (CUDA only; slower, slightly
    less exact), then smaller micro-batches (grad_accum keeps the effective batch), then shorter sequences."""
    change: dict = {}
    if not config.gradient_checkpointing:
        change = {**change, "gradient_checkpointing": True}
        yield change
    if device.kind == "cuda" and config.quantization != "4bit" and not quantization_unavailable("4bit", device):
        change = {**change, "quantization": "4bit"}
        yield change
    batch, accum = config.batch_size, config.grad_accum
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        change = {**change, "batch_size": batch, "grad_accum": min(accum, 64)}
        yield change
    seq = config.max_seq_length
    while seq // 2 >= MIN_SEQ_LENGTH:
        seq //= 2
        change = {**change, "max_seq_length": seq}
        yield change


def change_that_fits(config: TrainConfig, device: DeviceInfo) -> dict | None:
    for change in candidate_changes(config, device):
        if plan_memory(config.update(**change), device, suggest=False).fits:
            return change
    return None


def describe_change(change: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in change.items())


# ----- settings for the GPU at hand ----------------------------------------------------------------
def tier_settings(device: DeviceInfo) -> dict:
    """The starting point by GPU memory: 40 GiB and more trains without checkpointing, 16-40 GiB with it,
    smaller cards load the base model in 4 bits as well (QLoRA)."""
    gib = device.total_memory / 2**30
    if gib >= 40:
        return {"gradient_checkpointing": False, "quantization": "none"}
    if gib >= 16:
        return {"gradient_checkpointing": True, "quantization": "none"}
    return {"gradient_checkpointing": True, "quantization": "4bit"}


def fit_to_device(config: TrainConfig, device: DeviceInfo | None = None, keep=()) -> TrainConfig:
    """``config`` with memory settings for this GPU (fields named in ``keep`` stay as they are), checked by the
    planner and made smaller if needed, marked as planned for this GPU. CPU and MPS configs are unchanged."""
    device = device or detect_device()
    if device.kind != "cuda":
        return config
    if effective_quantization(config.update(quantization="4bit"), device) == "none":
        keep = {*keep, "quantization"}  # no bitsandbytes: 4-bit is not an option here
    tier = {k: v for k, v in tier_settings(device).items() if k not in keep}
    config = config.update(**tier, planned_for=device.label)
    plan = plan_memory(config, device)
    if not plan.fits and plan.suggested and not set(plan.suggested) & set(keep):
        config = config.update(**plan.suggested)
    return config


def replan_for_device(config: TrainConfig, device: DeviceInfo, notices: list[str] | None = None) -> TrainConfig:
    """A config planned for another GPU, re-planned for this one (and said so). A config with no plan, or
    planned for this device, is returned as it is, with a note when the planner expects it not to fit."""
    if config.planned_for and config.planned_for != device.label and device.kind == "cuda":
        before = config
        config = fit_to_device(config.update(planned_for=None), device)
        changed = {k: getattr(config, k) for k in ("gradient_checkpointing", "quantization", "batch_size",
                                                   "grad_accum", "max_seq_length") if getattr(config, k) != getattr(before, k)}
        notice(f"this config was planned for {before.planned_for}; re-planned for {device.label}: "
               f"{describe_change(changed) if changed else 'the same settings fit'} "
               f"({plan_memory(config, device, suggest=False).needed / GB:.1f} GB)", notices)
        return config
    plan = plan_memory(config, device)
    if not plan.fits and device.kind == "cuda":
        notice(f"the memory planner expects this run not to fit: {plan.describe()}", notices)
    return config


# ----- measuring -------------------------------------------------------------------------------------
def peak_memory() -> tuple[int, str]:
    """Peak memory so far: what PyTorch reserved on a GPU (what the card had to hold), the process's peak RSS
    elsewhere."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_reserved()), "cuda peak reserved"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process peak RSS"


def memory_now() -> int:
    """Memory in use now, measured like ``peak_memory``."""
    import psutil
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.memory_reserved())
    return int(psutil.Process().memory_info().rss)


def memory_summary(config: TrainConfig, device, before: int, largest_batch: int) -> dict:
    """Memory before and at the peak of training, its share of the device, and the planner's prediction for the
    largest micro-batch the run saw (PyTorch's part, with the allocator's slack) beside its worst case."""
    peak, kind = peak_memory()
    seen = plan_memory(config, device, tokens=max(largest_batch, 1), suggest=False)
    context = seen.parts.get("CUDA context", 0)
    return {"kind": kind, "device": device.label, "device_bytes": device.total_memory, "before_bytes": before,
            "peak_bytes": peak, "peak_share": round(peak / device.total_memory, 4) if device.total_memory else None,
            "planned_bytes": int((seen.total - context) * FRAGMENTATION), "planned_tokens": largest_batch,
            "planned_worst_case_bytes": plan_memory(config, device, suggest=False).needed}


def describe_memory(memory: dict) -> list[str]:
    share = f", {memory['peak_share']:.0%} of {memory['device']}" if memory.get("peak_share") is not None else ""
    return [f"memory before training: {memory['before_bytes'] / GB:.2f} GB; peak: {memory['peak_bytes'] / GB:.2f} GB "
            f"({memory['kind']}{share})",
            f"memory planner: {memory['planned_bytes'] / GB:.2f} GB predicted for the largest batch "
            f"({memory['planned_tokens']:,} tokens); {memory['planned_worst_case_bytes'] / GB:.2f} GB planned for the "
            f"worst case"]
