"""Local LoRA training: assistant-only labels, checks before training, checkpoints, SIGKILL resume, merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi3lab.config import TrainConfig
from phi3lab.errors import ConfigError, Phi3LabError
from phi3lab.models import OFFLINE_MODEL, load_tokenizer
from phi3lab.runs import CONFIG_NAME
from phi3lab.training import TrainingError
from phi3lab.training.artifacts import load_merged, load_trained, merge_and_save
from phi3lab.training.chat_format import IGNORE_INDEX, tokenize_conversation
from phi3lab.training.checkpoints import complete_checkpoints
from phi3lab.training.trainer import resolve_speed, train

SYSTEM = "You are a support assistant for Contoso."
CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "My kettle is noisy."},
    {"role": "assistant", "content": "Sorry about that. Descale it with vinegar."},
    {"role": "user", "content": "Still noisy."},
    {"role": "assistant", "content": "Then I will send a replacement."},
]
# Phi-3-mini-4k-instruct's chat template (as published with the model): no {% generation %} markers,
# <|end|> closes each turn, and the eos token is appended after the last turn when not prompting.
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(OFFLINE_MODEL)


@pytest.fixture(autouse=True)
def runs_root(tmp_path, monkeypatch):
    """Every run of these tests lives under the test's own runs root."""
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def trained_text(tokenizer, row) -> str:
    return tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE_INDEX])


def write_chat_files(folder: Path, n_train: int = 16, n_validation: int = 4) -> tuple[Path, Path]:
    items = ["kettle", "router", "printer", "laptop"]
    paths = []
    for name, count, offset in (("train", n_train, 0), ("validation", n_validation, 100)):
        path = folder / f"{name}.jsonl"
        lines = []
        for i in range(offset, offset + count):
            item = items[i % len(items)]
            lines.append(json.dumps({"messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"My {item} broke. Order {i}."},
                {"role": "assistant", "content": f"Ticket T{i} is open; a new {item} ships tomorrow."}]}))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def tiny_config(folder: Path, **overrides) -> TrainConfig:
    train_file, validation_file = write_chat_files(folder)
    values = dict(model=OFFLINE_MODEL, train_file=str(train_file), validation_file=str(validation_file),
                  max_steps=4, batch_size=2, max_seq_length=64, lora_r=4, lora_alpha=8,
                  target_modules=["qkv_proj", "o_proj"], eval_steps=2, save_steps=1, logging_steps=1,
                  run_name="run")
    return TrainConfig.create(**{**values, **overrides})


# ----- labels: only assistant text and its end-of-turn token are trained ----------------------------
def test_labels_cover_exactly_the_assistant_turns_and_their_end_token(tokenizer):
    row = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    assert trained_text(tokenizer, row) == (
        "Sorry about that. Descale it with vinegar.<|im_end|>\nThen I will send a replacement.<|im_end|>\n")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert sum(1 for t, label in zip(row["input_ids"], row["labels"], strict=True) if t == im_end and label == t) == 2
    prompt = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label == IGNORE_INDEX])
    assert SYSTEM in prompt and "My kettle is noisy." in prompt  # the system prompt is kept, not trained


def test_labels_with_the_phi3_template(tokenizer):
    phi3_style = load_tokenizer(OFFLINE_MODEL)
    phi3_style.chat_template = PHI3_TEMPLATE
    phi3_style.add_special_tokens({"additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]})
    row = tokenize_conversation(phi3_style, CONVERSATION, max_length=512)
    text = trained_text(phi3_style, row)
    assert text.startswith("Sorry about that. Descale it with vinegar.<|end|>\nThen I will send a replacement.<|end|>")
    assert "<|user|>" not in text and "Still noisy" not in text


def test_truncation_keeps_labels_aligned(tokenizer):
    row = tokenize_conversation(tokenizer, CONVERSATION, max_length=40)
    assert len(row["input_ids"]) == len(row["labels"]) == 40
    assert trained_text(tokenizer, row) in "Sorry about that. Descale it with vinegar.<|im_end|>\n"


# ----- clear errors before training -----------------------------------------------------------------
def test_out_of_range_config_is_refused():
    with pytest.raises(ConfigError, match=r"learning_rate.*Allowed range"):
        TrainConfig.create(learning_rate=5.0)


def test_sequence_length_above_context_is_refused(tmp_path):
    config = tiny_config(tmp_path, max_seq_length=9000)
    with pytest.raises(TrainingError, match="context length of 8192"):
        train(config)


def test_invalid_data_is_refused_with_its_line(tmp_path):
    config = tiny_config(tmp_path)
    Path(config.train_file).write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    with pytest.raises(Phi3LabError, match="line 2"):
        train(config)
    assert not config.run.adapter_dir.exists()


def test_training_without_progress_prints_no_raw_log_dicts(tmp_path, capsys):
    train(tiny_config(tmp_path, max_steps=2, eval_steps=2), progress=False)  # the loss lab trains this way
    printed = capsys.readouterr().out
    assert "'loss'" not in printed and "'eval_loss'" not in printed


def test_a_runs_root_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "runs-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PHI3LAB_RUNS", str(blocker))
    with pytest.raises(TrainingError, match="runs-file is a file, where a folder is needed"):
        train(tiny_config(tmp_path))
    assert blocker.read_text() == "not a folder"


def test_unknown_target_modules_list_the_real_ones(tmp_path):
    config = tiny_config(tmp_path, target_modules=["q_proj", "v_proj"])
    with pytest.raises(TrainingError) as caught:
        train(config)
    assert "qkv_proj" in str(caught.value) and "gate_up_proj" in str(caught.value)


def test_speed_switches_fall_back_with_a_notice_on_cpu(capsys):
    config = TrainConfig(attn_implementation="flash_attention_2", use_liger=True, torch_compile=True,
                         gradient_checkpointing=True, quantization="4bit")
    notices: list[str] = []
    speed = resolve_speed(config, "cpu", notices)
    assert speed == {"packing": True, "attn_implementation": "sdpa", "use_liger": False, "torch_compile": False,
                     "gradient_checkpointing": True, "quantization": "none"}
    assert len(notices) == 4 and all("\n" not in n for n in notices)
    assert "quantization='4bit' needs a CUDA GPU" in notices[0]
    assert capsys.readouterr().out.count("note: ") == 4


# ----- a real run, killed and resumed -------------------------------------------------------------
def run_cli(config_file: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "phi3lab", "train", "--config", str(config_file), "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_sigkill_then_rerun_resumes_to_the_same_step_count(tmp_path):
    config = tiny_config(tmp_path, gradient_checkpointing=True)
    config_file = config.save(tmp_path / "config.yaml")
    run = config.run

    first = run_cli(config_file)
    deadline = time.monotonic() + 240
    while not complete_checkpoints(run) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert complete_checkpoints(run), first.communicate()[0][-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = int(complete_checkpoints(run)[-1].name.split("-")[1])
    assert killed_at < config.max_steps and not run.adapter_dir.exists()  # killed mid-way
    assert TrainConfig.load(run.config_file) == config  # the hand-off file exists before the run ends

    second = run_cli(config_file)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out[-3000:]
    summary = json.loads(run.summary_file.read_text())
    assert summary["steps"] == config.max_steps
    assert summary["resumed_from_step"] == killed_at >= 1
    history = json.loads(run.history_file.read_text())
    train_steps = [r["step"] for r in history["records"] if r["split"] == "train"]
    assert train_steps == list(range(1, config.max_steps + 1))  # nothing lost, nothing repeated
    validation_steps = [r["step"] for r in history["records"] if r["split"] == "validation"]
    assert validation_steps[0] == 0 and validation_steps.count(0) == 1  # the base model, scored once
    assert len(complete_checkpoints(run)) <= 2 and not run.staging_dir.exists()
    for folder in complete_checkpoints(run) + [run.adapter_dir]:
        assert {"adapter_model.safetensors", "tokenizer.json", "config.yaml", "history.json"} <= {
            p.name for p in folder.iterdir()}


def test_trained_adapter_loads_merges_and_reloads(tmp_path, tokenizer):
    import torch
    from transformers import TrainerCallback

    config = tiny_config(tmp_path, max_steps=2, eval_steps=2, save_steps=2, seed=7)
    configs_at_first_step = []

    class ReadTheHandOff(TrainerCallback):  # what notebooks 03-05 would read while the run is going
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                configs_at_first_step.append(TrainConfig.load(config.run.config_file))

    result = train(config, callbacks=[ReadTheHandOff()], progress=False)
    assert configs_at_first_step == [config]
    assert result.summary["steps"] == 2 and result.summary["non_pad_tokens_per_second"] > 0
    assert result.summary["final_validation_loss"] is not None
    assert result.history.series("validation")[0] == [0, 2]  # the curve starts at the untrained model
    assert result.run == config.run and result.adapter_dir == config.run.adapter_dir
    assert result.adapter_dir.parent.parent == tmp_path / "runs"  # under PHI3LAB_RUNS
    model, loaded_tokenizer = load_trained(result.adapter_dir)
    merged_dir = merge_and_save(result.adapter_dir, tmp_path / "merged")
    merged, _ = load_merged(merged_dir)
    batch = loaded_tokenizer.apply_chat_template([CONVERSATION], return_tensors="pt", return_dict=True)
    with torch.no_grad():
        adapted = model(**batch).logits
        standalone = merged(**batch).logits
    assert torch.allclose(adapted, standalone, atol=1e-4)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # training moved the adapter away from its init


def test_adapter_of_another_base_model_gives_a_clear_error(tmp_path):
    from peft import get_peft_model
    from transformers import Phi3Config, Phi3ForCausalLM

    from phi3lab.training.hf_objects import lora_config

    config = TrainConfig(model=OFFLINE_MODEL, lora_r=4, target_modules=["qkv_proj"])
    other = Phi3ForCausalLM(Phi3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=30,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=49152))
    folder = tmp_path / "adapter"
    get_peft_model(other, lora_config(config)).save_pretrained(folder)
    config.save(folder / CONFIG_NAME)
    with pytest.raises(TrainingError, match="another base model"):
        load_trained(folder)


def test_missing_adapter_folder_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="not a trained adapter folder"):
        load_trained(tmp_path / "nothing")


def test_non_pad_lengths_of_padded_and_flattened_batches(tokenizer):
    from phi3lab.training.chat_format import make_collator
    from phi3lab.training.trainer import sequence_lengths

    rows = [tokenize_conversation(tokenizer, c, 512) for c in (CONVERSATION, CONVERSATION[:3])]
    features = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    real = [len(r["input_ids"]) for r in rows]
    padded = make_collator(tokenizer, packing=False, attn_implementation="sdpa")(features)
    flat = make_collator(tokenizer, packing=True, attn_implementation="sdpa")(features)
    assert padded["input_ids"].shape == (2, max(real)) and flat["input_ids"].shape == (1, sum(real))
    assert sequence_lengths(padded) == sequence_lengths(flat) == real
    # padding-free: the second conversation's first label is masked, so nothing is predicted across the seam
    assert flat["labels"][0, real[0]].item() == IGNORE_INDEX


def test_planned_examples_match_the_automatic_split_training_uses(tmp_path, tokenizer):
    from phi3lab.training.chat_format import load_splits
    from phi3lab.training.planning import training_examples

    config = tiny_config(tmp_path, validation_file=None)
    write_chat_files(tmp_path, n_train=23)
    train_set, validation_set = load_splits(config, tokenizer)
    assert (len(train_set), len(validation_set)) == (20, 3)
    assert training_examples(config) == len(train_set)


def test_cli_run_name_overrides_the_configs_run(tmp_path, monkeypatch, capsys):
    from phi3lab.cli import main
    from phi3lab.training import trainer
    from phi3lab.training.trainer import TrainResult

    seen = []

    def fake_train(config, resume=True, progress=True):  # the real run is covered above
        seen.append(config)
        summary = {"steps": 1, "resumed_from_step": 0, "device": "cpu", "dtype": "float32",
                   "non_pad_tokens_per_second": 1.0, "trained_tokens": 1, "peak_memory_bytes": 0,
                   "peak_memory_kind": "-", "wall_seconds": 1.0, "final_train_loss": 1.0, "final_validation_loss": None}
        return TrainResult(output_dir=config.run.folder, adapter_dir=config.run.adapter_dir, history=None,
                           summary=summary)

    monkeypatch.setattr(trainer, "train", fake_train)
    config_file = tiny_config(tmp_path).save(tmp_path / "config.yaml")
    assert main(["train", "--config", str(config_file), "--run-name", "experiments/lr-high", "--no-progress"]) == 0
    assert seen[0].run_name == "experiments/lr-high"
    assert str(tmp_path / "runs" / "experiments" / "lr-high" / "adapter") in capsys.readouterr().out
