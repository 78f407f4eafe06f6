"""Precision by real capability, with the device faked: T4, V100, A100, H100, Apple's MPS and the CPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from phi3lab import devices
from phi3lab.config import TrainConfig
from phi3lab.training import trainer
from phi3lab.training.hf_objects import precision_arguments

# name, total memory, compute capability (NVIDIA data sheets / CUDA GPUs page)
GPUS = {"T4": ("Tesla T4", 15_835_398_144, (7, 5)), "V100": ("Tesla V100-SXM2-16GB", 16_928_342_016, (7, 0)),
        "A100": ("NVIDIA A100-SXM4-80GB", 85_089_730_560, (8, 0)), "H100": ("NVIDIA H100 80GB HBM3", 84_929_347_584, (9, 0))}


@pytest.fixture
def fake_gpu(monkeypatch):
    """Make torch report one CUDA GPU with the given properties; torch's own bf16 check runs on them."""
    def install(key: str):
        name, memory, (major, minor) = GPUS[key]
        props = SimpleNamespace(name=name, total_memory=memory, major=major, minor=minor)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
    return install


@pytest.fixture
def fake_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 21_000_000_000, raising=False)
    monkeypatch.delenv(devices.MPS_FALLBACK_ENV, raising=False)


@pytest.mark.parametrize("gpu, weights, flags", [
    ("T4", torch.float16, {"bf16": False, "fp16": True}),  # emulated bf16 is not native: fp16 + loss scaling
    ("V100", torch.float16, {"bf16": False, "fp16": True}),
    ("A100", torch.bfloat16, {"bf16": True, "fp16": False}),
    ("H100", torch.bfloat16, {"bf16": True, "fp16": False}),
])
def test_gpu_precision_follows_native_bf16(fake_gpu, gpu, weights, flags):
    fake_gpu(gpu)
    device = devices.detect_device()
    assert (device.kind, device.name, device.compute_capability) == ("cuda", GPUS[gpu][0], GPUS[gpu][2])
    precision = devices.pick_precision(device)
    assert precision.dtype == weights and devices.pick_dtype("cuda") == weights
    assert precision_arguments(precision) == flags


def test_cpu_trains_in_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    device = devices.detect_device()
    assert device.kind == "cpu" and devices.pick_device() == "cpu"
    precision = devices.pick_precision(device)
    assert precision.dtype == torch.float32 and precision_arguments(precision) == {"bf16": False, "fp16": False}


def test_apple_silicon_gets_mps_in_fp32_with_cpu_fallback(fake_mps):
    import os

    assert devices.pick_device() == "mps"
    assert os.environ[devices.MPS_FALLBACK_ENV] == "1"  # ops MPS lacks run on the CPU instead of failing
    device = devices.detect_device()
    assert device.total_memory == 21_000_000_000  # the unified memory PyTorch recommends using
    precision = devices.pick_precision(device)
    assert precision.dtype == torch.float32 and not precision.bf16 and not precision.fp16
    assert devices.pick_dtype("mps") == torch.float32


@pytest.mark.parametrize("gpu, bf16, fp16", [("T4", False, True), ("A100", True, False)])
def test_the_trainer_gets_the_devices_flags(fake_gpu, monkeypatch, tmp_path, gpu, bf16, fp16):
    fake_gpu(gpu)
    seen = {}

    class Stop(Exception):
        pass

    def capture(config, output_dir, bf16_flag, progress=True, **overrides):
        seen.update(bf16=bf16_flag, fp16=overrides.get("fp16"))
        raise Stop

    monkeypatch.setattr(trainer, "training_arguments", capture)
    speed = {"packing": True, "attn_implementation": "sdpa", "use_liger": False, "torch_compile": False,
             "gradient_checkpointing": False, "quantization": "none"}
    with pytest.raises(Stop):
        trainer.build_trainer(TrainConfig(), model=None, tokenizer=None, train_set=None, eval_set=None,
                              staging_dir=tmp_path, speed=speed)
    assert seen == {"bf16": bf16, "fp16": fp16}


def test_lora_weights_stay_fp32_on_a_16_bit_base():
    """fp16 loss scaling needs fp32 trainable weights: peft keeps adapters in fp32 on a 16-bit base model."""
    from transformers import Phi3Config, Phi3ForCausalLM

    from phi3lab.training.hf_objects import add_lora

    base = Phi3ForCausalLM(Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, pad_token_id=0)).to(torch.float16)
    model = add_lora(TrainConfig(lora_r=2), base)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert model.base_model.model.model.layers[0].self_attn.qkv_proj.base_layer.weight.dtype == torch.float16


def test_quantization_needs_cuda_and_bitsandbytes(fake_gpu, monkeypatch):
    cpu = devices.DeviceInfo("cpu", "CPU", 8 * 2**30)
    assert devices.quantization_unavailable("none", cpu) is None
    assert "needs a CUDA GPU" in devices.quantization_unavailable("4bit", cpu)
    fake_gpu("T4")
    monkeypatch.setattr(devices, "bitsandbytes_available", lambda: False)
    assert "bitsandbytes" in devices.quantization_unavailable("4bit", devices.detect_device())
    monkeypatch.setattr(devices, "bitsandbytes_available", lambda: True)
    assert devices.quantization_unavailable("4bit", devices.detect_device()) is None


def test_qlora_settings_are_nf4_double_quant_in_the_devices_dtype(fake_gpu, monkeypatch):
    from phi3lab import models

    fake_gpu("T4")
    monkeypatch.setattr(devices, "bitsandbytes_available", lambda: True)
    monkeypatch.setattr(models, "quantization_unavailable", devices.quantization_unavailable)
    settings = models.quantization_config("4bit", devices.pick_dtype("cuda"))
    assert settings.load_in_4bit and settings.bnb_4bit_quant_type == "nf4" and settings.bnb_4bit_use_double_quant
    assert settings.bnb_4bit_compute_dtype == torch.float16  # a T4 computes in fp16
    assert models.quantization_config("8bit", torch.bfloat16).load_in_8bit
