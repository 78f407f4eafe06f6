"""Every exercise check: the reference solution passes, a typical wrong answer gets a hint, a blank gets a hint.

The contexts are the objects the notebooks pass (a config, a request, a classifier report, a peft model, an
endpoint), built small here.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from evaluation_fixtures import make_tiny_phi3

from phi3lab import exercises
from phi3lab.azure.dryrun import RecordedRequest
from phi3lab.config import TrainConfig
from phi3lab.errors import Phi3LabError
from phi3lab.evaluation import LanguageMetrics

SYSTEM_PROMPT = "You are an Xbox customer support agent."
LABELS = ["network_wifi", "subscriptions", "storage_installs", "off_topic_opinion"]
CONFUSION = [[8, 3, 0, 0],  # network_wifi mixed up with subscriptions 3 + 1 times: the top pair
             [1, 9, 1, 0],
             [0, 0, 10, 1],
             [0, 0, 0, 12]]


class FakeClient:
    """The part of an ``openai`` client the exercise uses, answering like the local server."""

    def __init__(self):
        self.sent = []
        self.chat = self.completions = self

    def create(self, **kwargs):
        self.sent.append(kwargs)
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content="Hold the Xbox button."))])


@pytest.fixture(scope="module")
def peft_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from phi3lab.training.hf_objects import add_lora

    folder = make_tiny_phi3(tmp_path_factory.mktemp("tiny-exercises"))
    return add_lora(TrainConfig(lora_r=4, lora_alpha=8), AutoModelForCausalLM.from_pretrained(folder))


@pytest.fixture(scope="module")
def contexts(peft_model):
    """Per exercise: the keyword arguments its notebook passes."""
    return {
        "own_conversation": {"system_prompt": SYSTEM_PROMPT},
        "lora_parameters": {"model": peft_model},
        "job_hyperparameters": {"config": TrainConfig()},
        "job_request": {"request": RecordedRequest("PUT", "https://management.azure.com/subscriptions/0000/jobs/"
                                                          "phi3lab-ft?api-version=2024-10-01-preview", {}, None)},
        "confused_intents": {"report": SimpleNamespace(labels=LABELS, confusion=CONFUSION)},
        "perplexity_from_loss": {"metrics": LanguageMetrics(loss=2.0, token_accuracy=0.4, tokens=100,
                                                            conversations=3, seconds=1.0)},
        "client_call": {"system_prompt": SYSTEM_PROMPT},
    }


WRONG = {
    "choose_approach": {"a": "fine-tuning", "b": "fine-tuning", "c": "prompting", "d": "retrieval"},
    "what_finetuning_teaches": {"1": True, "2": True, "3": True, "4": False},
    "repair_line": json.dumps({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "a"},
                                            {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}),
    "own_conversation": {"messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                      {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    "attention_targets": ["q_proj", "v_proj"],
    "tiny_learning_rate": "c",
    "lora_parameters": 4 * 4,
    "job_hyperparameters": {"learning_rate": 0.0001, "num_train_epochs": 2, "per_device_train_batch_size": 8},
    "job_request": {"method": "POST", "api_version": "2024-10-01-preview"},
    "confused_intents": ("network_wifi", "off_topic_opinion"),
    "loss_patterns": {"A": "healthy", "B": "unstable", "C": "too slow"},
    "perplexity_from_loss": 2.0,
    "client_call": lambda client, question: client.chat.completions.create(
        model="phi3lab", messages=[{"role": "robot", "content": question}], max_tokens=60),
    "cleanup_order": ["job", "model", "endpoint", "data"],
}
BLANKS = [..., None, "", [], {}, {"A": ..., "B": ...}]


def test_every_exercise_has_a_wrong_answer_here():
    assert set(WRONG) == set(exercises.EXERCISES), "add a wrong answer for each new exercise to WRONG"


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_the_reference_solution_passes(name, contexts):
    context = contexts.get(name, {})
    feedback = exercises.grade(name, exercises.solution(name, **context), **context)
    assert feedback.passed, f"{name}: the reference solution fails: {feedback}"
    assert str(feedback).startswith("PASS: ")


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_a_wrong_answer_gets_a_hint(name, contexts):
    feedback = exercises.grade(name, WRONG[name], **contexts.get(name, {}))
    assert not feedback.passed and str(feedback).startswith("HINT: ") and len(feedback.message) > 20, feedback


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
@pytest.mark.parametrize("blank", BLANKS, ids=["ellipsis", "none", "empty-str", "empty-list", "empty-dict",
                                                "dict-of-ellipsis"])
def test_a_blank_answer_gets_the_starting_hint_not_an_error(name, blank, contexts):
    feedback = exercises.grade(name, blank, **contexts.get(name, {}))
    assert not feedback.passed and feedback.message == exercises.get(name).start


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_an_answer_of_the_wrong_type_gets_a_hint_not_an_error(name, contexts):
    assert not exercises.grade(name, 3.5 if name != "perplexity_from_loss" else "7.39", **contexts.get(name, {})).passed


def test_check_prints_pass_or_hint(capsys):
    exercises.check("tiny_learning_rate", "b")
    exercises.check("tiny_learning_rate", ...)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("PASS: ") and out[1].startswith("HINT: ")


def test_hints_name_what_is_wrong(contexts):
    assert "'q_proj' is another model's name" in exercises.grade("attention_targets", ["q_proj"]).message
    assert "'gate_up_proj' belongs to the MLP" in exercises.grade("attention_targets",
                                                                  ["qkv_proj", "o_proj", "gate_up_proj"]).message
    assert "Look again at 'b'" in exercises.grade("choose_approach", WRONG["choose_approach"]).message
    assert "two user messages in a row" in exercises.grade("repair_line", exercises.dirty_line()).message
    assert "the service's REST specification types every hyperparameter as a string" in exercises.grade(
        "job_hyperparameters", WRONG["job_hyperparameters"], config=TrainConfig()).message
    assert "mixed up 0 times; the most confused pair, network_wifi and subscriptions, 4 times" in exercises.grade(
        "confused_intents", WRONG["confused_intents"], **contexts["confused_intents"]).message
    assert "messages.0.role" in exercises.grade("client_call", WRONG["client_call"]).message
    assert "raised ZeroDivisionError" in exercises.grade("client_call", lambda client, question: 1 / 0).message
    assert "fill in 'C' too" in exercises.grade("loss_patterns", {"A": "healthy", "B": "overfitting", "C": ...}).message


def test_the_repair_must_keep_what_the_customer_said():
    record = json.loads(exercises.dirty_line())
    system, first, _, reply = record["messages"]
    only_first = json.dumps({"messages": [system, first, reply]})  # valid, but drops "Like really loud."
    feedback = exercises.grade("repair_line", only_first)
    assert not feedback.passed and "keep everything the customer said" in feedback.message


def test_the_lora_count_is_read_from_the_model(peft_model, contexts):
    a, b = exercises.lora_pair(peft_model)
    assert exercises.solution("lora_parameters", model=peft_model) == 4 * (a.shape[1] + b.shape[0])
    frozen = a.shape[1] * b.shape[0]
    assert "the frozen weight W itself" in exercises.grade("lora_parameters", frozen, model=peft_model).message


def test_the_client_call_is_checked_then_sent_with_the_real_client():
    client = FakeClient()
    ask = exercises.solution("client_call", system_prompt=SYSTEM_PROMPT)
    feedback = exercises.grade("client_call", ask, system_prompt=SYSTEM_PROMPT, client=client)
    assert feedback.passed and "Hold the Xbox button." in feedback.message
    assert client.sent == [{"model": "phi3lab", "max_tokens": 60, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": exercises.QUESTION}]}]

    def no_system(client, question):
        return client.chat.completions.create(model="m", messages=[{"role": "user", "content": question}],
                                              max_tokens=20)

    def fixed_question(client, question):
        return client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=20)

    assert "start with the system prompt" in exercises.grade("client_call", no_system, system_prompt=SYSTEM_PROMPT,
                                                             client=client).message
    assert "end the messages with the question" in exercises.grade("client_call", fixed_question).message
    assert len(client.sent) == 1, "a request that fails the check is not sent"


def test_an_unknown_exercise_is_one_clear_error():
    with pytest.raises(Phi3LabError, match="no exercise named 'nope'. Exercises: choose_approach"):
        exercises.check("nope", 1)


def test_every_notebook_has_two_or_three_exercises():
    counts = {nb: len(exercises.exercises_in(nb)) for nb in ("00", "01", "02", "03", "04", "05")}
    assert all(2 <= n <= 3 for n in counts.values()), counts
