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


# ----- issue 19: no silent coercion, short messages, no YAML aliases, file problems named -----------------
@pytest.mark.parametrize("field, value", [("batch_size", True), ("max_steps", "4"), ("epochs", 2.0),
                                          ("learning_rate", "2e-4"), ("warmup_ratio", False), ("packing", 1),
                                          ("gradient_checkpointing", "yes"), ("target_modules", "qkv_proj")])
def test_coerced_types_are_refused(field, value):
    with pytest.raises(ConfigError, match=rf"{field}={value!r} is invalid"):
        TrainConfig.create(**{field: value})


def test_yaml_as_learners_write_it_still_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("learning_rate: 2e-4\nwarmup_ratio: 0\nbatch_size: 8\nmax_steps: -1\npacking: false\n"
                    "target_modules: [qkv_proj, o_proj]\nvalidation_file: null\n")
    config = TrainConfig.load(path)
    assert (config.learning_rate, config.warmup_ratio, config.batch_size, config.packing) == (2e-4, 0.0, 8, False)
    path.write_text("batch_size: true\nmax_steps: \"4\"\n")
    with pytest.raises(ConfigError, match=r"batch_size=True is invalid.*max_steps='4' is invalid"):
        TrainConfig.load(path)


def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path):
    rows = [f'{name}: &{name} [{", ".join([f"*{prev}"] * 9 if prev else ["lol"] * 9)}]'
            for prev, name in zip([None, "a", "b", "c", "d", "e"], "abcdef", strict=True)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(rows) + "\ntarget_modules: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n")
    assert bomb.stat().st_size < 400
    with pytest.raises(ConfigError, match=r"aliases \(\*name\) are not allowed.* at line 2, column") as info:
        TrainConfig.load(bomb)
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)


def test_huge_values_are_quoted_short():
    with pytest.raises(ConfigError) as info:
        TrainConfig.create(model=["x" * 10_000] * 10_000, target_modules=list(range(100_000)), **{"k" * 5000: 1})
    message = str(info.value)
    assert len(message) < 1500 and "more problem(s)" in message


@pytest.mark.parametrize("content, words", [(b"\xff\xfe\x00\x89PNG\x00", "is not UTF-8 text"),
                                            (b"\x89PNG\r\n\x1a\n\x00\x00", "is not UTF-8 text")])
def test_a_binary_config_file_is_named(tmp_path, content, words):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=words) as info:
        TrainConfig.load(path)
    assert str(path) in str(info.value) and "Fix:" in str(info.value)
