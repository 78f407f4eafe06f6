"""A custom task with a task-specific layer: classify the user's intent.

``AutoModelForSequenceClassification`` puts a linear ``score`` head on Phi-3: it reads the hidden
state of the last real token and outputs one logit per intent. The head starts random, so it is
trained in full (peft ``modules_to_save``) while LoRA adapts the transformer, exactly as for chat.
The trained classifier is saved like the chat adapter: an adapter folder holding the peft weights,
the tokenizer, ``config.yaml`` and ``labels.json`` (the label map and the wording around each message).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .config import TrainConfig, default_config, is_ci_profile
from .errors import Phi3LabError
from .history import MetricsHistory
from .io import atomic_directory, atomic_write_json
from .paths import repo_path
from .runs import CONFIG_NAME, HISTORY_NAME, run_folder

LABELS_FILE = "labels.json"
REPORT_FILE = "report.json"
DEFAULT_RUN = "intent"  # the classifier's run folder under the runs root
# A new head learns faster than LoRA on pre-trained weights needs; the rest comes from the config.
CLASSIFIER_OVERRIDES = {"learning_rate": 1e-3, "epochs": 3, "batch_size": 16, "max_seq_length": 128,
                        "run_name": DEFAULT_RUN}
# What differs from chat training: the task and the head, trained in full since it starts random.
LORA_OVERRIDES = {"task_type": "SEQ_CLS", "modules_to_save": ["score"]}
CI_EVAL_LIMIT = 40  # validation examples scored under the CI profile
# The head reads the hidden state of the last token. Ending every input with the same question makes
# that token one whose job is to sum up the message (macro-F1 0.827 -> 0.891 on the course data, the
# same 3 epochs and seed), instead of whatever word the customer happened to type last.
MESSAGE_INTRO = "Customer message:\n"
TOPIC_QUESTION = "\nTopic of this message:"


class ClassifierError(Phi3LabError):
    """The intent data or a saved classifier cannot be used."""


def classifier_config(preset: str = "workshop default", **overrides) -> TrainConfig:
    """The chat training config with the classifier's learning rate, epochs and run name."""
    config = default_config(preset)
    values = {key: value for key, value in CLASSIFIER_OVERRIDES.items()
              if not (is_ci_profile() and key in ("batch_size", "max_seq_length"))}
    return config.update(**{**values, **overrides})


# ----- data ----------------------------------------------------------------------------------
def intent_text(messages: list[dict]) -> str:
    """What the classifier reads: the user's turns (the answer is not known yet when routing)."""
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


@dataclass
class IntentSet:
    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, limit: int | None) -> IntentSet:
        return self if limit is None else IntentSet(self.texts[:limit], self.labels[:limit])


def load_intents(chat_path: str | Path, labels_path: str | Path) -> IntentSet:
    """User texts and their intents; a labels file that does not match the chat file is a DataError.

    Relative paths start at the repository root, like the config's.
    """
    from .data import load_labels, read_conversations

    chat_path, labels_path = repo_path(chat_path), repo_path(labels_path)
    labels = load_labels(chat_path, labels_path)
    texts = [intent_text(messages) for messages in read_conversations(chat_path)]
    if not texts:
        raise ClassifierError(f"{chat_path} has no conversations; the classifier needs labelled examples. "
                              f"Fix: point it at the course data (data/train.jsonl) or add conversations.")
    return IntentSet(texts, labels)


def labels_path_for(chat_path: str | Path) -> Path:
    """The course convention: ``train.jsonl`` is labelled by ``train_labels.jsonl`` beside it."""
    chat_path = Path(chat_path)
    return chat_path.with_name(f"{chat_path.stem}_labels.jsonl")


# ----- metrics ---------------------------------------------------------------------------------
@dataclass
class ClassifierReport:
    """Accuracy, macro-F1, F1 per intent and the confusion matrix (rows true, columns predicted)."""

    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    confusion: list[list[int]]
    n: int

    @classmethod
    def score(cls, truth: list[str], predicted: list[str], labels: list[str]) -> ClassifierReport:
        from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

        per_class = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
        return cls(labels=list(labels), accuracy=float(accuracy_score(truth, predicted)),
                   macro_f1=float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
                   per_class_f1={name: float(f1) for name, f1 in zip(labels, per_class, strict=True)},
                   confusion=confusion_matrix(truth, predicted, labels=labels).tolist(), n=len(truth))

    def summary(self) -> str:
        width = max(map(len, self.labels))
        rows = [f"{'examples':>{width}}: {self.n}", f"{'accuracy':>{width}}: {self.accuracy:.3f}",
                f"{'macro-F1':>{width}}: {self.macro_f1:.3f}", "", f"{'intent':>{width}}  F1"]
        rows += [f"{name:>{width}}  {f1:.3f}" for name, f1 in self.per_class_f1.items()]
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {"labels": self.labels, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "per_class_f1": self.per_class_f1, "confusion": self.confusion, "n": self.n}


# ----- the model ---------------------------------------------------------------------------------
@dataclass
class IntentClassifier:
    model: object  # peft model wrapping ...ForSequenceClassification
    tokenizer: object
    labels: list[str]
    config: TrainConfig
    # The wording around each message is part of the model: it is saved with the labels and read back.
    intro: str = MESSAGE_INTRO
    question: str = TOPIC_QUESTION

    def encode(self, texts: list[str]) -> list[dict]:
        """Token ids the head reads: the message, cut to fit, then the topic question (never cut)."""
        question = self.tokenizer(self.question, add_special_tokens=False)["input_ids"] if self.question else []
        room = max(self.config.max_seq_length - len(question), 1)
        messages = self.tokenizer([self.intro + text for text in texts], truncation=True, max_length=room)
        return [{"input_ids": ids + question, "attention_mask": [1] * (len(ids) + len(question))}
                for ids in messages["input_ids"]]

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        import torch

        self.model.eval()
        predicted = []
        device = next(self.model.parameters()).device
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer.pad(self.encode(texts[start:start + batch_size]), return_tensors="pt").to(device)
            with torch.inference_mode():
                logits = self.model(**batch).logits
            predicted += [self.labels[i] for i in logits.argmax(-1).tolist()]
        return predicted

    def evaluate(self, data: IntentSet) -> ClassifierReport:
        if not len(data):
            raise ClassifierError("the evaluation set is empty. Fix: pass labelled validation examples.")
        return ClassifierReport.score(data.labels, self.predict(data.texts), self.labels)

    def save(self, folder: str | Path, extras: dict[str, dict] | None = None) -> Path:
        """Adapter weights (LoRA + the full head), tokenizer, config, label map and ``extras`` JSON files,
        written atomically."""
        with atomic_directory(folder) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            self.config.save(tmp / CONFIG_NAME)
            atomic_write_json(tmp / LABELS_FILE, {"labels": self.labels,
                                                  "input": {"intro": self.intro, "question": self.question}})
            for name, data in (extras or {}).items():
                atomic_write_json(tmp / name, data)
        return Path(folder)


def _base_classifier(config: TrainConfig, labels: list[str], tokenizer):
    from transformers import AutoModelForSequenceClassification

    from .models import model_source, pick_device, pick_dtype, quiet_loading

    device = pick_device()
    with quiet_loading():  # transformers would list the new head as MISSING in a load report
        model = AutoModelForSequenceClassification.from_pretrained(
            model_source(config.model), num_labels=len(labels), dtype=pick_dtype(device),
            id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
            attn_implementation=config.attn_implementation if config.attn_implementation != "flash_attention_2" else "sdpa")
    # The head reads the last non-pad token, so the model must know the tokenizer's pad id
    # (the stand-in's config names <|im_end|>, which would point the head at the wrong token).
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device)


def new_classifier(config: TrainConfig, labels: list[str]) -> IntentClassifier:
    from .models import load_tokenizer
    from .training.hf_objects import add_lora

    tokenizer = load_tokenizer(config.model)
    model = add_lora(config, _base_classifier(config, labels, tokenizer), **LORA_OVERRIDES)
    print(f"note: the classification head ({len(labels)} intents) is new and untrained on purpose: training learns it")
    return IntentClassifier(model, tokenizer, list(labels), config)


def load_classifier(folder: str | Path | None = None) -> IntentClassifier:
    """Load a classifier saved by ``train_classifier`` (default: the ``intent`` run's adapter); clear errors for
    missing or mismatched folders."""
    from peft import PeftModel

    from .models import load_tokenizer

    folder = run_folder(DEFAULT_RUN).adapter_dir if folder is None else repo_path(folder)
    if not (folder / LABELS_FILE).is_file() or not (folder / "adapter_config.json").is_file():
        raise ClassifierError(f"no intent classifier in {folder} (it needs adapter_config.json and {LABELS_FILE}). "
                              f"Fix: train one with train_classifier() (notebook 04) or pass its folder.")
    config = TrainConfig.load(folder / CONFIG_NAME)
    saved = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
    labels = saved["labels"]
    framing = saved.get("input", {"intro": "", "question": ""})  # saved before the framing existed: plain text
    tokenizer = load_tokenizer(config.model)
    try:
        model = PeftModel.from_pretrained(_base_classifier(config, labels, tokenizer), str(folder))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ClassifierError(
            f"the classifier in {folder} does not fit base model '{config.model}' ({str(exc).splitlines()[0][:160]}). "
            f"It was probably trained on another base model or saved by another version. Fix: load it with the "
            f"model it was trained on, or train it again with train_classifier().") from None
    return IntentClassifier(model, tokenizer, labels, config, framing["intro"], framing["question"])


# ----- training ----------------------------------------------------------------------------------
@dataclass
class ClassifierRun:
    classifier: IntentClassifier
    report: ClassifierReport
    history: MetricsHistory
    adapter_dir: Path
    seconds: float = 0.0


def _encode(classifier: IntentClassifier, data: IntentSet) -> list[dict]:
    index = {name: i for i, name in enumerate(classifier.labels)}
    return [{**row, "labels": index[label]} for row, label in zip(classifier.encode(data.texts), data.labels,
                                                                   strict=True)]


def _training_arguments(config: TrainConfig, scratch: str, progress: bool):
    """Chat training's arguments and mixed precision, except: no checkpoints (a run takes minutes) and larger
    evaluation batches (a short message needs little memory)."""
    from .training.hf_objects import device_precision_arguments, training_arguments

    flags = device_precision_arguments()
    return training_arguments(config, scratch, flags.pop("bf16"), progress, save_strategy="no",
                              per_device_eval_batch_size=max(config.batch_size, 16), **flags)


def _labelled_splits(config: TrainConfig, eval_limit: int | None) -> tuple[IntentSet, IntentSet]:
    if config.validation_file is None:
        raise ClassifierError("the classifier needs a labelled validation file (config.validation_file is None). "
                              "Fix: split the data first (phi3lab data split) and set validation_file.")
    train_path, val_path = config.resolve(config.train_file), config.resolve(config.validation_file)
    train = load_intents(train_path, labels_path_for(train_path))
    validation = load_intents(val_path, labels_path_for(val_path))
    validation = validation.head(eval_limit if eval_limit is not None else CI_EVAL_LIMIT if is_ci_profile() else None)
    unseen = sorted(set(validation.labels) - set(train.labels))
    if unseen:
        raise ClassifierError(f"validation intents {unseen} never occur in {config.train_file}. "
                              f"Fix: re-split with stratification (phi3lab data split --labels ...).")
    return train, validation


def train_classifier(config: TrainConfig | None = None, eval_limit: int | None = None,
                     progress: bool = True) -> ClassifierRun:
    """Fine-tune the intent classifier on ``config.train_file`` and its labels, score it, save it.

    Validation is ``config.validation_file`` with its labels. Under the CI profile only the first
    ``CI_EVAL_LIMIT`` validation examples are scored (the config already caps the steps).
    """
    import tempfile
    import time

    from transformers import DataCollatorWithPadding, Trainer, set_seed

    from .training.hf_objects import keep_trainable_in_fp32
    from .training.trainer import evaluate_last_step

    config = config or classifier_config()
    train, validation = _labelled_splits(config, eval_limit)
    set_seed(config.seed)
    classifier = new_classifier(config, sorted(set(train.labels)))
    keep_trainable_in_fp32(classifier.model)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="phi3lab-intent-") as scratch:
        trainer = Trainer(model=classifier.model, args=_training_arguments(config, scratch, progress),
                          train_dataset=_encode(classifier, train), eval_dataset=_encode(classifier, validation),
                          data_collator=DataCollatorWithPadding(classifier.tokenizer))
        trainer.train()
        evaluate_last_step(trainer)
    seconds = time.perf_counter() - started
    report = classifier.evaluate(validation)
    history = MetricsHistory.from_trainer_log(trainer.state.log_history, run="intent classifier")
    adapter_dir = config.run.adapter_dir
    classifier.save(adapter_dir, extras={REPORT_FILE: report.to_dict(), HISTORY_NAME: history.to_dict()})
    return ClassifierRun(classifier, report, history, adapter_dir, seconds)
