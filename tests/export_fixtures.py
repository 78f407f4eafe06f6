"""A finished run small enough to export in a second: a 2-layer random Phi-3 (with the stand-in's tokenizer)
and a random LoRA adapter on it, laid out as training leaves a run. Used by the export and streaming tests."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation_fixtures import make_tiny_phi3


def make_exportable_phi3(folder: Path) -> Path:
    """``make_tiny_phi3`` with what ONNX Runtime needs: heads of 16 dimensions (its attention kernel's
    multiple) and ``original_max_position_embeddings`` equal to the maximum (plain RoPE, as the stand-in)."""
    make_tiny_phi3(folder, hidden=64)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["original_max_position_embeddings"] = config["max_position_embeddings"]
    config_file.write_text(json.dumps(config, indent=2))
    return folder


def make_finished_run(runs_root: Path, base: Path, name: str = "tiny") -> Path:
    """A run folder whose ``adapter/`` holds a LoRA adapter with random (non-zero) weights, its tokenizer and
    its config, as ``phi3lab train`` writes it; the base model is ``base``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phi3lab.config import TrainConfig

    run = runs_root / name
    adapter = run / "adapter"
    config = TrainConfig(run_name=name, lora_r=4, lora_alpha=8)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base)
    # init_lora_weights=False: B is random too, so the adapter changes the answers (trained ones do).
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=config.target_modules,
                      init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    config.save(run / "config.yaml")
    config.save(adapter / "config.yaml")
    return run
