"""Intent classifier: data, metrics, training with a fully trained head, save/load, clear errors."""

import json

import pytest
from evaluation_fixtures import make_tiny_phi3, write_chat
from safetensors import safe_open

from phi3lab import classifier, models
from phi3lab.data import DataError
from phi3lab.errors import Phi3LabError


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_phi3(tmp_path_factory.mktemp("tiny-phi3"))


@pytest.fixture
def tiny_model(monkeypatch, tiny_model_dir):
    """Route the catalog's stand-in to the tiny Phi-3 so training takes seconds."""
    monkeypatch.setattr(models, "model_source", lambda name: str(tiny_model_dir))
    return tiny_model_dir


@pytest.fixture(autouse=True)
def runs_root(tmp_path, monkeypatch):
    """Classifier runs of these tests live under the test's own runs root."""
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture
def data(tmp_path):
    return write_chat(tmp_path, "train", 48), write_chat(tmp_path, "validation", 12, offset=1)


def config_for(tmp_path, train, validation, **overrides):
    values = {"model": "phi3-tiny-offline", "train_file": str(train), "validation_file": str(validation),
              "run_name": "intent", "learning_rate": 5e-3, "epochs": 6, "batch_size": 8,
              "max_steps": -1, "eval_steps": 6, "logging_steps": 3, "lora_r": 4, "lora_alpha": 8, **overrides}
    return classifier.classifier_config(**values)


def test_classifier_reads_the_user_turns_only():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "wifi"},
                {"role": "assistant", "content": "A"}, {"role": "user", "content": "still broken"},
                {"role": "assistant", "content": "B"}]
    assert classifier.intent_text(messages) == "wifi\nstill broken"


def test_every_input_ends_with_the_topic_question_even_when_cut(tiny_model):
    config = classifier.classifier_config(model="phi3-tiny-offline", max_seq_length=32)
    router = classifier.IntentClassifier(None, models.load_tokenizer(config.model), ["a", "b"], config)
    question = router.tokenizer(classifier.TOPIC_QUESTION, add_special_tokens=False)["input_ids"]
    short, long = router.encode(["wifi drops", "my controller keeps blinking " * 50])
    assert len(long["input_ids"]) == 32 and long["input_ids"][-len(question):] == question
    assert short["input_ids"][-len(question):] == question and sum(short["attention_mask"]) == len(short["input_ids"])
    assert "wifi drops" in router.tokenizer.decode(short["input_ids"])


def test_labels_are_read_beside_the_chat_file(data):
    train, _ = data
    intents = classifier.load_intents(train, classifier.labels_path_for(train))
    assert len(intents) == 48 and intents.labels[:3] == ["network", "controller", "refund"]
    assert intents.texts[0] == "My Xbox will not connect to Wi-Fi"


def test_labels_that_do_not_match_the_data_name_the_problem(data, tmp_path):
    train, _ = data
    labels = tmp_path / "short_labels.jsonl"
    labels.write_text("".join(json.dumps({"line": n, "intent": "network"}) + "\n" for n in range(1, 41)))
    with pytest.raises(DataError, match="8 conversation.*have no label"):
        classifier.load_intents(train, labels)


def test_empty_data_is_a_clear_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "empty_labels.jsonl").write_text("")
    with pytest.raises(DataError, match="holds no conversations"):  # one clear message, from the data reader
        classifier.load_intents(tmp_path / "empty.jsonl", tmp_path / "empty_labels.jsonl")


def test_report_matches_hand_computed_scores():
    truth = ["a", "a", "b", "b", "c", "c"]
    predicted = ["a", "b", "b", "b", "c", "a"]
    report = classifier.ClassifierReport.score(truth, predicted, ["a", "b", "c"])
    assert report.accuracy == pytest.approx(4 / 6)
    # a: P=1/2 R=1/2 F=0.5; b: P=2/3 R=1 F=0.8; c: P=1 R=1/2 F=2/3
    assert report.per_class_f1 == pytest.approx({"a": 0.5, "b": 0.8, "c": 2 / 3})
    assert report.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert report.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert "macro-F1: 0.656" in report.summary()


def test_training_learns_intents_saves_and_loads_the_same_classifier(tiny_model, data, tmp_path):
    run = classifier.train_classifier(config_for(tmp_path, *data))
    assert run.report.n == 12 and run.report.macro_f1 >= 0.9, run.report.summary()
    assert run.history.series("train")[1][-1] < run.history.series("train")[1][0]
    steps = run.history.series("validation")[0]
    assert steps[-1] >= run.history.series("train")[0][-1] and len(steps) == len(set(steps))  # ends once

    folder = run.adapter_dir
    assert folder == tmp_path / "runs" / "intent" / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "config.yaml",
                 "labels.json", "report.json", "history.json"):
        assert (folder / name).is_file(), name
    with safe_open(folder / "adapter_model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert any("score" in k and "lora" not in k for k in keys), "the head must be saved in full"
    assert any("lora_A" in k for k in keys)

    loaded = classifier.load_classifier(folder)
    assert classifier.load_classifier().labels == loaded.labels  # by default, the "intent" run's adapter
    texts = ["My controller will not pair", "I want a refund for a game", "The NAT type says strict"]
    assert loaded.labels == run.classifier.labels
    assert loaded.predict(texts) == run.classifier.predict(texts)
    assert (loaded.intro, loaded.question) == (classifier.MESSAGE_INTRO, classifier.TOPIC_QUESTION)

    # a classifier saved before the framing was recorded read plain text, and is loaded that way
    (folder / "labels.json").write_text(json.dumps({"labels": run.classifier.labels}))
    older = classifier.load_classifier(folder)
    assert (older.intro, older.question) == ("", "")
    assert older.encode(["wifi"])[0]["input_ids"] == older.tokenizer("wifi")["input_ids"]


def test_trainer_arguments_are_chat_trainings_with_the_classifiers_overrides(data, tmp_path):
    from phi3lab.training.hf_objects import training_arguments

    config = config_for(tmp_path, *data, batch_size=4)
    chat = training_arguments(config, tmp_path / "chat", bf16=False)
    intent = classifier._training_arguments(config, str(tmp_path / "intent"), progress=False)
    assert (intent.bf16, intent.fp16) == (False, False)  # this CPU: fp32, as chat training picks here
    assert (intent.learning_rate, intent.num_train_epochs, intent.optim) == (chat.learning_rate, 6, chat.optim)
    assert intent.save_strategy == "no" != chat.save_strategy
    assert (intent.per_device_train_batch_size, intent.per_device_eval_batch_size) == (4, 16)


def test_on_a_t4_the_classifier_trains_like_chat_training_fp16_with_fp32_trained_weights(data, tmp_path,
                                                                                        monkeypatch):
    import torch

    from phi3lab import devices
    from phi3lab.training import hf_objects

    t4 = devices.DeviceInfo(kind="cuda", name="Tesla T4", total_memory=15 * 2**30, compute_capability=(7, 5))
    monkeypatch.setattr(devices, "detect_device", lambda: t4)
    seen = {}
    # TrainingArguments refuses fp16 without a GPU, so the flags are read where they are handed over
    monkeypatch.setattr(hf_objects, "training_arguments",
                        lambda config, out, bf16, progress=True, **kw: seen.update(bf16=bf16, fp16=kw.get("fp16")))
    classifier._training_arguments(config_for(tmp_path, *data), str(tmp_path / "intent"), progress=False)
    assert seen == {"bf16": False, "fp16": True}
    head = torch.nn.Linear(4, 2).half()
    hf_objects.keep_trainable_in_fp32(head)
    assert head.weight.dtype == torch.float32


def test_head_is_trained_in_full_and_the_backbone_only_through_lora(tiny_model, data, tmp_path):
    clf = classifier.new_classifier(config_for(tmp_path, *data), ["controller", "network", "refund"])
    trainable = [n for n, p in clf.model.named_parameters() if p.requires_grad]
    assert any("score" in n and "modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "score" in n for n in trainable)
    assert clf.model.base_model.model.config.pad_token_id == clf.tokenizer.pad_token_id


def test_missing_classifier_folder_is_a_clear_error(tmp_path):
    with pytest.raises(classifier.ClassifierError, match="no intent classifier.*train_classifier"):
        classifier.load_classifier(tmp_path / "nothing-here")


def test_classifier_from_another_base_model_is_refused(tiny_model, data, tmp_path, monkeypatch, tmp_path_factory):
    run = classifier.train_classifier(config_for(tmp_path, *data, max_steps=1))
    wider = make_tiny_phi3(tmp_path_factory.mktemp("wider-phi3"), hidden=48)
    monkeypatch.setattr(models, "model_source", lambda name: str(wider))
    with pytest.raises(Phi3LabError, match="does not fit base model"):
        classifier.load_classifier(run.adapter_dir)


def test_validation_intents_missing_from_training_are_refused(tiny_model, tmp_path):
    train = write_chat(tmp_path, "train", 6)
    validation = write_chat(tmp_path, "validation", 3)
    (tmp_path / "validation_labels.jsonl").write_text(
        "".join(json.dumps({"line": n, "intent": "brand-new"}) + "\n" for n in (1, 2, 3)))
    with pytest.raises(classifier.ClassifierError, match="never occur"):
        classifier.train_classifier(config_for(tmp_path, train, validation))
