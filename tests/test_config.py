"""The one typed config: ranges, clear errors, presets, profiles, YAML/JSON round trips."""

import pytest

from phi3lab.config import CI_PROFILE, PRESETS, TrainConfig, default_config, field_range
from phi3lab.errors import ConfigError


def test_defaults_are_valid_and_target_phi3_fused_layers():
    config = TrainConfig()
    assert config.target_modules == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert config.effective_batch_size == config.batch_size * config.grad_accum


@pytest.mark.parametrize("field,value", [("learning_rate", 5.0), ("epochs", 0), ("lora_r", 1000),
                                         ("lora_dropout", 0.9), ("batch_size", -1), ("max_seq_length", 8)])
def test_out_of_range_names_field_and_range(field, value):
    low, high = field_range(field)
    with pytest.raises(ConfigError) as info:
        TrainConfig.create(**{field: value})
    assert field in str(info.value) and f"{low} to {high}" in str(info.value)


def test_assignment_is_validated_and_leaves_config_unchanged():
    config = TrainConfig()
    with pytest.raises(ConfigError, match="learning_rate"):
        config.learning_rate = 1.0
    assert config.learning_rate == 2e-4
    config.learning_rate = 1e-3
    assert config.learning_rate == 1e-3


def test_unknown_setting_is_named():
    with pytest.raises(ConfigError, match="unknown setting 'learnin_rate'"):
        TrainConfig.create(learnin_rate=1e-4)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    config = TrainConfig(learning_rate=3e-4, lora_r=8, target_modules=["qkv_proj"])
    path = config.save(tmp_path / f"run{suffix}")
    assert TrainConfig.load(path) == config


def test_load_reports_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.load(bad)
    bad.write_text("epochs: 99\n")
    with pytest.raises(ConfigError, match="epochs=99"):
        TrainConfig.load(bad)


def test_presets_and_ci_profile(monkeypatch):
    monkeypatch.delenv("PHI3LAB_PROFILE", raising=False)
    for name in PRESETS:
        assert isinstance(default_config(name), TrainConfig)
    with pytest.raises(ConfigError, match="quick look"):
        default_config("fastest")
    monkeypatch.setenv("PHI3LAB_PROFILE", "ci")
    ci = default_config(epochs=2)
    assert ci.max_steps == CI_PROFILE["max_steps"] and ci.epochs == 2


def test_update_returns_validated_copy():
    config = TrainConfig()
    changed = config.update(epochs=3)
    assert (config.epochs, changed.epochs) == (1, 3)
    with pytest.raises(ConfigError):
        config.update(epochs=100)
