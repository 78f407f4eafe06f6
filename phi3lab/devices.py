"""Which device trains, and in which precision, decided by what the hardware supports natively.

- CUDA with native bf16 (compute capability 8.0+: A100, H100, L4, A10G, RTX 30xx/40xx): bf16 weights,
  Trainer ``bf16``.
- CUDA without it (T4, V100): fp16 weights, Trainer ``fp16`` (mixed precision with loss scaling). The
  LoRA weights stay fp32 (peft upcasts 16-bit adapters), which fp16 loss scaling requires.
  ``torch.cuda.is_bf16_supported()`` alone is not enough: by default it counts emulation, so a T4
  answers yes and trains in slow emulated bf16.
- Apple Silicon (MPS): fp32, the precision that trains stably there on every macOS and PyTorch
  version; ops MPS lacks fall back to the CPU (``PYTORCH_ENABLE_MPS_FALLBACK``).
- CPU: fp32 (exact and stable; 16-bit matmuls are slow on most CPUs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

MPS_FALLBACK_ENV = "PYTORCH_ENABLE_MPS_FALLBACK"


@dataclass(frozen=True)
class DeviceInfo:
    """One training device: its kind, name, memory and whether it computes bf16 natively."""

    kind: str  # "cuda", "mps" or "cpu"
    name: str
    total_memory: int  # bytes; for MPS and CPU the memory the device may use (shared with the system)
    compute_capability: tuple[int, int] | None = None
    native_bf16: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} ({self.total_memory / 1e9:.1f} GB)"


@dataclass(frozen=True)
class Precision:
    """The dtype of the frozen base weights and the Trainer's mixed-precision flags."""

    weights: str  # "bfloat16", "float16" or "float32"
    bf16: bool  # Trainer autocasts to bf16
    fp16: bool  # Trainer autocasts to fp16 and scales the loss (GradScaler)
    reason: str

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.weights)

    @property
    def bytes_per_weight(self) -> int:
        return 4 if self.weights == "float32" else 2


def _system_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def detect_device() -> DeviceInfo:
    """The device this process trains on: the first CUDA GPU, else Apple's MPS, else the CPU."""
    import platform

    import torch

    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return DeviceInfo("cuda", props.name, int(props.total_memory), (props.major, props.minor),
                          bool(torch.cuda.is_bf16_supported(including_emulation=False)))
    if _mps_available():
        limit = getattr(torch.mps, "recommended_max_memory", None)
        return DeviceInfo("mps", "Apple GPU (MPS)", int(limit()) if limit else _system_memory())
    return DeviceInfo("cpu", f"CPU ({platform.machine() or 'unknown'}, {os.cpu_count()} cores)", _system_memory())


def pick_device() -> str:
    """"cuda", "mps" or "cpu". Choosing MPS also lets the ops it lacks run on the CPU instead of failing."""
    kind = detect_device().kind
    if kind == "mps":
        os.environ.setdefault(MPS_FALLBACK_ENV, "1")
    return kind


def pick_precision(device: DeviceInfo | None = None) -> Precision:
    """The precision for training on ``device`` (see the module's docstring for why)."""
    device = device or detect_device()
    if device.kind == "cuda" and device.native_bf16:
        return Precision("bfloat16", bf16=True, fp16=False, reason="bf16: this GPU computes it natively")
    if device.kind == "cuda":
        return Precision("float16", bf16=False, fp16=True,
                         reason="fp16 mixed precision with loss scaling: this GPU has no native bf16 "
                                "(compute capability below 8.0); LoRA weights stay fp32")
    if device.kind == "mps":
        return Precision("float32", bf16=False, fp16=False,
                         reason="fp32 on Apple's GPU: 16-bit training there depends on the macOS and PyTorch version")
    return Precision("float32", bf16=False, fp16=False, reason="fp32 on the CPU: exact, and 16-bit is slow there")


def pick_dtype(device: str | None = None):
    """The base weights' dtype for a device kind ("cuda", "mps", "cpu"; default: this machine's)."""
    import torch

    kind = device or pick_device()
    if kind == "cuda" and torch.cuda.is_available():
        return pick_precision(detect_device()).dtype
    return torch.float32


@lru_cache(maxsize=1)
def bitsandbytes_available() -> bool:
    """Whether bitsandbytes is installed (it is only useful, and only installed, on CUDA machines)."""
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def quantization_unavailable(quantization: str, device: DeviceInfo) -> str | None:
    """Why ``quantization`` cannot be used on ``device`` (None when it can)."""
    if quantization == "none":
        return None
    if device.kind != "cuda":
        return (f"quantization='{quantization}' needs a CUDA GPU (bitsandbytes); on {device.kind.upper()} the base "
                f"model loads unquantized")
    if not bitsandbytes_available():
        return (f"quantization='{quantization}' needs the bitsandbytes package (pip install -e \".[gpu]\"); "
                f"the base model loads unquantized")
    return None
