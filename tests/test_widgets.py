"""HyperparameterPanel: widgets write the config, bounds come from the config, presets, derived numbers."""

from __future__ import annotations

import pytest

from phi3lab.config import PRESETS, TrainConfig, field_range
from phi3lab.models import OFFLINE_MODEL, linear_layer_names, load_model
from phi3lab.widgets import HyperparameterPanel, preset_values


@pytest.fixture(scope="module")
def model():
    return load_model(OFFLINE_MODEL, device="cpu")


@pytest.fixture
def panel(model):
    return HyperparameterPanel(TrainConfig(model=OFFLINE_MODEL), model=model)


def test_setting_a_widget_changes_the_config(panel):
    panel.controls["learning_rate"].value = 1e-3
    panel.controls["epochs"].value = 3
    panel.controls["lora_r"].value = 8
    panel.controls["target_modules"].value = ("qkv_proj", "down_proj")
    config = panel.config
    assert (config.learning_rate, config.epochs, config.lora_r) == (pytest.approx(1e-3), 3, 8)
    assert config.target_modules == ["qkv_proj", "down_proj"]


@pytest.mark.parametrize("name, value", [("epochs", 1000), ("batch_size", 0), ("lora_dropout", 0.9),
                                         ("learning_rate", 1.0), ("max_seq_length", 10**7)])
def test_out_of_range_values_cannot_be_set(panel, name, value):
    low, high = field_range(name)
    panel.controls[name].value = value
    assert low <= getattr(panel.config, name) <= high
    assert getattr(panel.config, name) == pytest.approx(min(max(value, low), high), rel=1e-6)


def test_learning_rate_is_a_log_slider_with_the_config_bounds(panel):
    slider = panel.controls["learning_rate"]
    assert type(slider).__name__ == "FloatLogSlider" and slider.description == "learning rate"
    assert (10 ** slider.min, 10 ** slider.max) == pytest.approx(field_range("learning_rate"))


def test_target_modules_list_the_models_linear_layers(panel, model):
    assert set(panel.controls["target_modules"].options) == set(linear_layer_names(model))
    panel.controls["target_modules"].value = ()  # nothing selected is invalid: the last valid choice stays
    assert panel.config.target_modules == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert "target_modules" in panel.message.value


def test_presets_apply_from_scratch(panel):
    panel.preset.value = "quick look"
    assert panel.config.max_steps == PRESETS["quick look"]["max_steps"]
    assert panel.controls["lora_r"].value == PRESETS["quick look"]["lora_r"]
    panel.preset.value = "workshop default"
    assert panel.config.max_steps == preset_values("workshop default")["max_steps"] == -1


def test_derived_numbers_match_peft(panel, model):
    from peft import get_peft_model

    from phi3lab.training.hf_objects import lora_config

    panel.controls["batch_size"].value = 4
    panel.controls["grad_accum"].value = 2
    numbers = panel.derived_numbers()
    assert numbers["effective_batch_size"] == 8
    assert numbers["training_examples"] and numbers["steps_per_epoch"] == -(-numbers["training_examples"] // 8)
    wrapped = get_peft_model(model, lora_config(panel.config))
    try:
        assert numbers["trainable_parameters"] == sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    finally:
        wrapped.unload()
    assert "effective batch: <b>8</b>" in panel.derived.value


def test_panel_without_a_model_reads_shapes_from_the_architecture():
    panel = HyperparameterPanel(TrainConfig(model=OFFLINE_MODEL))
    assert "qkv_proj" in panel.controls["target_modules"].options
    assert panel.derived_numbers()["trainable_parameters"] > 0


def test_subset_for_notebook_03_has_stable_names_and_classes():
    panel = HyperparameterPanel(TrainConfig(model=OFFLINE_MODEL), fields=("batch_size", "learning_rate", "epochs"))
    assert list(panel.controls) == ["batch_size", "learning_rate", "epochs"]
    assert panel.controls["epochs"].description == "epochs"
    assert "phi3lab-learning-rate" in panel.controls["learning_rate"]._dom_classes
    assert "phi3lab-epochs" in panel.controls["epochs"]._dom_classes


def test_warmup_step_is_measured_on_demand(panel, model):
    panel.controls["batch_size"].value = 1
    panel.controls["max_seq_length"].value = 128  # the course's system prompt alone is about 60 tokens
    assert panel.derived_numbers()["estimated_seconds"] is None  # nothing runs at display time
    seconds = panel.measure_warmup()
    assert seconds > 0
    assert panel.derived_numbers()["estimated_seconds"] == pytest.approx(seconds * panel.derived_numbers()["total_steps"])
    assert not any("lora" in n for n, _ in model.named_modules())  # the caller's model is left as it was


def test_the_loss_plot_is_still_importable_from_the_widgets():
    from phi3lab.widgets import live_loss_plot

    assert type(live_loss_plot()).__name__ == "LiveLossPlot"  # moved to phi3lab.plots; notebook 02 imports it here


def test_a_config_that_cannot_train_shows_why_instead_of_a_time(panel):
    panel.controls["max_seq_length"].value = 32  # shorter than the system prompt: nothing left to train
    assert panel.measure_warmup() is None
    assert "max_seq_length" in panel.message.value and panel.derived_numbers()["estimated_seconds"] is None


def test_the_panel_shows_whether_the_config_fits_and_what_makes_it_fit(monkeypatch):
    from phi3lab import devices
    from phi3lab.training import memory

    t4 = memory.KNOWN_GPUS["Tesla T4"].device()
    monkeypatch.setattr(memory, "detect_device", lambda: t4)
    monkeypatch.setattr(devices, "bitsandbytes_available", lambda: True)
    panel = HyperparameterPanel(TrainConfig(model=OFFLINE_MODEL))
    assert "fits on this GPU, Tesla T4" in panel.derived.value
    panel.controls["model"].value = "phi-3-mini-4k-instruct"  # 28.5 GB for 4 x 512 tokens without checkpointing
    assert "does not fit on this GPU" in panel.derived.value and "gradient_checkpointing=True" in panel.derived.value
    panel.controls["gradient_checkpointing"].value = True
    assert panel.memory_plan().fits and "does not fit" not in panel.derived.value
    panel.controls["quantization"].value = "4bit"
    assert panel.config.quantization == "4bit" and panel.memory_plan().parts["base weights"] < 3e9
