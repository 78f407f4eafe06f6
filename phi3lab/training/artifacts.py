"""Using a trained run: load its adapter, fold it into the base weights, load the merged model.

Serving, evaluation and the CLI import this module without the trainer.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..config import TrainConfig
from ..io import atomic_directory
from ..runs import CONFIG_NAME, SUMMARY_NAME, RunFolder
from .errors import TrainingError, notice

ADAPTER_WEIGHTS_CONFIG = "adapter_config.json"  # written by peft's save_pretrained


def adapter_folder(adapter: str | os.PathLike | RunFolder) -> Path:
    """An adapter folder given as a path, or the final adapter of a ``RunFolder``."""
    return adapter.adapter_dir if isinstance(adapter, RunFolder) else Path(adapter)


def load_trained(adapter_dir: str | os.PathLike | RunFolder, merge: bool = False):
    """(model, tokenizer): the base model named in the adapter's config with the adapter applied."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from ..models import load_model

    adapter_dir = adapter_folder(adapter_dir)
    if not (adapter_dir / ADAPTER_WEIGHTS_CONFIG).is_file() or not (adapter_dir / CONFIG_NAME).is_file():
        raise TrainingError(f"{adapter_dir} is not a trained adapter folder (no {ADAPTER_WEIGHTS_CONFIG}/"
                            f"{CONFIG_NAME}). Fix: train first (notebook 02 or `phi3lab train`) and pass the run's "
                            f"adapter folder (runs/<run name>/adapter).")
    config = TrainConfig.load(adapter_dir / CONFIG_NAME)
    base = standalone_base(config) if merge and config.quantization != "none" else load_model(config.model)
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


def standalone_base(config: TrainConfig):
    """The base model to merge a QLoRA/8-bit adapter into: 16-bit, because merging into quantized weights would
    round the sum back to 4 or 8 bits. With CUDA and bitsandbytes the quantized weights the adapter was trained
    against are dequantized; elsewhere the original 16-bit weights are loaded (they differ from those by the
    quantization error, so the merged model answers very slightly differently from the adapter)."""
    import torch

    from ..devices import detect_device, pick_precision, quantization_unavailable
    from ..models import load_model

    device = detect_device()
    dtype = pick_precision(device).dtype if device.kind == "cuda" else torch.bfloat16
    if quantization_unavailable(config.quantization, device):
        notice(f"the adapter was trained on a {config.quantization} base model; without CUDA and bitsandbytes it is "
               f"merged into the original {str(dtype).replace('torch.', '')} weights instead")
        return load_model(config.model, device=device.kind if device.kind != "mps" else "cpu", dtype=dtype)
    return load_model(config.model, dtype=dtype, quantization=config.quantization).dequantize()


def merge_and_save(adapter_dir: str | os.PathLike | RunFolder, out_dir: str | os.PathLike) -> Path:
    """Fold the adapter into the base weights and save a standalone model (atomically). An adapter trained on a
    4-bit or 8-bit base (QLoRA) is merged into 16-bit weights (see ``standalone_base``): the result is an ordinary
    fp16/bf16 model, about 7.6 GB for Phi-3-mini, where the adapter alone is a few MB."""
    from ..models import quiet_loading

    adapter_dir = adapter_folder(adapter_dir)
    model, tokenizer = load_trained(adapter_dir, merge=True)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp, quiet_loading():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.copy2(adapter_dir / CONFIG_NAME, tmp / CONFIG_NAME)
    return out_dir


def load_merged(model_dir: str | os.PathLike):
    """(model, tokenizer) from a folder written by ``merge_and_save``, on the best device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models import pick_device, pick_dtype, quiet_loading

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainingError(f"{model_dir} holds no merged model. Fix: run merge_and_save(adapter_dir, {model_dir}).")
    device = pick_device()
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=pick_dtype(device)).to(device)
    return model.eval(), AutoTokenizer.from_pretrained(str(model_dir))


def read_summary(adapter_dir: str | os.PathLike | RunFolder) -> dict:
    """The run's measured numbers (``summary.json`` written beside the adapter)."""
    path = adapter_folder(adapter_dir) / SUMMARY_NAME
    if not path.is_file():
        raise TrainingError(f"{path} does not exist: the run has not finished. Fix: train it to the end "
                            f"(notebook 02 or `phi3lab train`).")
    return json.loads(path.read_text(encoding="utf-8"))
