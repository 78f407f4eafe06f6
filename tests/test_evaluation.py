"""Evaluation: metric definitions, perplexity equal to the plain per-conversation loss, comparison, errors."""

import json
import math

import pytest
import torch
from evaluation_fixtures import make_tiny_phi3, write_chat

from phi3lab import evaluation
from phi3lab.data import read_conversations
from phi3lab.errors import Phi3LabError
from phi3lab.training import TrainingError, load_trained, tokenize_conversation


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = make_tiny_phi3(tmp_path_factory.mktemp("tiny-phi3"))
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def conversations(tmp_path_factory):
    path = write_chat(tmp_path_factory.mktemp("chat"), "validation", 7, multi_turn_every=3)
    return list(read_conversations(path))


def plain_metrics(model, tokenizer, conversations):
    """The reference: one conversation at a time through the model's own loss, token-weighted,
    and the share of assistant tokens that are the model's top next-token guess."""
    total = count = correct = 0
    for messages in conversations:
        row = tokenize_conversation(tokenizer, messages, 2048)
        labels = torch.tensor([row["labels"]])
        scored = labels[:, 1:] != -100
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([row["input_ids"]]), labels=labels)
        total += out.loss.item() * int(scored.sum())
        correct += int((out.logits[:, :-1].argmax(-1) == labels[:, 1:])[scored].sum())
        count += int(scored.sum())
    return total / count, correct / count, count


# ----- metric definitions ----------------------------------------------------------------------------
@pytest.mark.parametrize("prediction, reference, expected", [
    ("Restart the console.", "restart the console", 1.0),            # case, punctuation, articles ignored
    ("restart your console", "restart the console now", 2 * (2 / 3 * 2 / 3) / (4 / 3)),
    ("unplug it", "restart the console", 0.0),
    ("", "", 1.0),
    ("", "restart", 0.0),
])
def test_token_f1_is_the_squad_definition(prediction, reference, expected):
    assert evaluation.token_f1(prediction, reference) == pytest.approx(expected)


def test_rouge_l_rewards_words_in_order():
    reference = "hold the power button for ten seconds"
    assert evaluation.rouge_l(reference, reference) == pytest.approx(1.0)
    assert evaluation.rouge_l("seconds ten for button power the hold", reference) < 0.3
    assert evaluation.rouge_l("press the power button for a few seconds", reference) > 0.5
    assert evaluation.rouge_l("contact support", reference) == 0.0


# ----- perplexity and token accuracy ---------------------------------------------------------------------
@pytest.mark.parametrize("share_prefix, batch_size", [(True, 3), (False, 3), (True, 1)])
def test_batched_perplexity_equals_the_plain_per_conversation_loss(tiny, conversations, share_prefix, batch_size):
    model, tokenizer = tiny
    expected, accuracy, count = plain_metrics(model, tokenizer, conversations)
    metrics = evaluation.language_metrics(model, tokenizer, conversations, batch_size=batch_size,
                                          share_prefix=share_prefix)
    assert metrics.tokens == count and metrics.conversations == 7
    assert metrics.loss == pytest.approx(expected, rel=1e-5)
    assert metrics.perplexity == pytest.approx(math.exp(expected), rel=1e-5)
    assert metrics.token_accuracy == pytest.approx(accuracy)


def test_only_assistant_tokens_are_scored(tiny, conversations):
    model, tokenizer = tiny
    rows = [tokenize_conversation(tokenizer, c, 2048) for c in conversations]
    assistant_tokens = sum(sum(1 for label in r["labels"] if label != -100) for r in rows)
    assert evaluation.language_metrics(model, tokenizer, conversations).tokens == assistant_tokens


def test_shared_system_prompt_is_found_and_stops_before_labels(tiny, conversations):
    _, tokenizer = tiny
    rows = [tokenize_conversation(tokenizer, c, 2048) for c in conversations]
    prefix = evaluation._shared_prefix(rows)
    system_tokens = len(tokenizer(tokenizer.apply_chat_template(conversations[0][:1], tokenize=False))["input_ids"])
    assert system_tokens <= prefix + 1 < min(r["labels"].index(next(x for x in r["labels"] if x != -100)) for r in rows)


# ----- comparison -------------------------------------------------------------------------------------------
def test_compare_uses_the_base_weights_by_switching_the_adapter_off(tiny, conversations):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    plain = evaluation.language_metrics(model, tokenizer, conversations[:3])
    tuned = get_peft_model(model, LoraConfig(r=4, target_modules=["qkv_proj", "o_proj"], init_lora_weights=False))
    try:
        result = evaluation.compare(tuned, tokenizer, conversations[:3], max_new_tokens=3)
    finally:
        tuned.unload()
    assert result.base.language.loss == pytest.approx(plain.loss, rel=1e-6)
    assert result.tuned.language.loss != pytest.approx(plain.loss, rel=1e-3)
    assert [row[0] for row in result.rows()] == ["perplexity", "next-token accuracy", "token F1", "ROUGE-L"]
    assert "perplexity" not in result.bar_scores()["base"]
    assert "<table>" in result._repr_html_() and "fine-tuned" in result.table()
    examples = result.examples(2)
    assert len(examples.items) == 2
    assert examples.items[0]["prompt"] == "It still fails."  # the last user turn of a multi-turn conversation
    assert examples.items[1]["prompt"] == conversations[1][1]["content"]
    assert set(json.loads(json.dumps(result.to_dict()))) == {"base", "fine-tuned"}


def test_compare_without_a_base_model_says_how_to_get_one(tiny, conversations):
    model, tokenizer = tiny
    with pytest.raises(evaluation.EvaluationError, match="needs the base model"):
        evaluation.compare(model, tokenizer, conversations[:1], max_new_tokens=2)


# ----- bad input ---------------------------------------------------------------------------------------------
def test_empty_validation_set_is_a_clear_error(tmp_path):
    (tmp_path / "validation.jsonl").write_text("\n")
    with pytest.raises(Phi3LabError, match="holds no conversations"):  # one clear message, from the data reader
        evaluation.load_validation(tmp_path / "validation.jsonl")


def test_missing_validation_file_is_a_clear_error(tmp_path):
    with pytest.raises(Phi3LabError, match="does not exist"):
        evaluation.load_validation(tmp_path / "nope.jsonl")


def test_conversations_without_assistant_text_in_range_are_refused(tiny):
    model, tokenizer = tiny
    long_user = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(evaluation.EvaluationError, match="raise max_length"):
        evaluation.language_metrics(model, tokenizer, [long_user], max_length=64)


def test_ci_profile_limits_the_validation_set(monkeypatch):
    monkeypatch.setenv("PHI3LAB_PROFILE", "ci")
    assert len(evaluation.load_validation()) == evaluation.CI_LIMIT


def test_adapter_trained_on_another_base_model_is_refused(tmp_path, tiny):
    from peft import LoraConfig, get_peft_model

    from phi3lab.config import TrainConfig

    model, tokenizer = tiny  # hidden size 32, the stand-in has 576
    folder = tmp_path / "adapter"
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["qkv_proj"]))
    peft_model.save_pretrained(folder)
    peft_model.unload()
    tokenizer.save_pretrained(folder)
    TrainConfig(model="phi3-tiny-offline").save(folder / "config.yaml")
    with pytest.raises(TrainingError, match="does not fit"):
        load_trained(folder)


# ----- behaviour: declining off-topic prompts, answering Xbox ones -------------------------------------------
def course_replies() -> list[tuple[str, str]]:
    """(intent, first assistant reply) of every conversation in the course data."""
    from phi3lab.data import load_labels

    pairs = []
    for split in ("train", "validation"):
        intents = load_labels(f"data/{split}.jsonl", f"data/{split}_labels.jsonl")
        replies = [c[2]["content"] for c in read_conversations(f"data/{split}.jsonl")]
        pairs += list(zip(intents, replies, strict=True))
    return pairs


def test_the_decline_detector_agrees_with_the_course_data():
    """Every off-topic or opinion reply in the data declines, and no Xbox answer does."""
    pairs = course_replies()
    missed = [r for intent, r in pairs if intent == "off_topic_opinion" and not evaluation.declines(r)]
    flagged = [r for intent, r in pairs if intent != "off_topic_opinion" and evaluation.declines(r)]
    assert not missed and not flagged, (missed[:3], flagged[:3])
    assert sum(intent == "off_topic_opinion" for intent, _ in pairs) >= 50


@pytest.mark.parametrize("reply, declined", [
    ("I’m not able to give opinions, but I can help with your console.", True),  # a curly apostrophe
    ("The best Call of Duty is the 2022 version.", False),
    # the base stand-in's own words, from a learner-default run of notebook 04
    ("As an Xbox customer support agent, I'm not equipped to provide recommendations or help with games.", True),
    ("Press and hold the Xbox button for 10 seconds.", False),
])
def test_declines_reads_what_the_model_wrote(reply, declined):
    assert evaluation.declines(reply) is declined


def test_the_behaviour_prompts_are_held_out_and_balanced(monkeypatch):
    prompts = evaluation.load_behaviour_prompts()
    asked = {c[1]["content"].lower() for split in ("train", "validation")
             for c in read_conversations(f"data/{split}.jsonl")}
    assert not [p["prompt"] for p in prompts if p["prompt"].lower() in asked], "a behaviour prompt is in the data"
    assert {p["expect"] for p in prompts} == {"decline", "answer"} and len(prompts) >= 20
    monkeypatch.setenv("PHI3LAB_PROFILE", "ci")
    ci = evaluation.load_behaviour_prompts()
    assert [p["expect"] for p in ci] == ["decline"] * 4 + ["answer"] * 4


def test_a_bad_behaviour_prompt_file_names_the_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "hi", "expect": "decline"}\n{"prompt": "yo", "expect": "maybe"}\n')
    with pytest.raises(evaluation.EvaluationError, match="line 2: each line needs a 'prompt' and 'expect'"):
        evaluation.load_behaviour_prompts(path)


def test_behaviour_shares_count_what_each_prompt_expected():
    rows = [{"prompt": "a", "expect": "decline", "reply": "", "declined": True},
            {"prompt": "b", "expect": "decline", "reply": "", "declined": False},
            {"prompt": "c", "expect": "answer", "reply": "", "declined": False},
            {"prompt": "d", "expect": "answer", "reply": "", "declined": False}]
    assert evaluation.BehaviourReport("m", rows).scores() == {"off-topic declined": 0.5, "Xbox answered": 1.0}


def test_compare_behaviour_asks_the_base_and_the_tuned_model(tiny, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from phi3lab import generation

    model, tokenizer = tiny
    replies = iter(["I can only help with Xbox products.", "Restart it.",  # the tuned model
                    "The best one is the 2022 version.", "Restart it."])   # its base, adapter off
    seen = []

    def fake_generate(m, tok, conversations, max_new_tokens):
        seen.append(conversations)
        return [next(replies) for _ in conversations]

    monkeypatch.setattr(generation, "generate", fake_generate)
    prompts = [{"prompt": "Which game is best?", "expect": "decline"}, {"prompt": "It won't start.", "expect": "answer"}]
    tuned = get_peft_model(model, LoraConfig(r=4, target_modules=["qkv_proj"]))
    try:
        result = evaluation.compare_behaviour(tuned, tokenizer, "Be an Xbox agent.", prompts)
    finally:
        tuned.unload()
    assert len(seen) == 2 and seen[0][0] == [{"role": "system", "content": "Be an Xbox agent."},
                             {"role": "user", "content": "Which game is best?"}]
    assert result.tuned.scores() == {"off-topic declined": 1.0, "Xbox answered": 1.0}
    assert result.base.scores() == {"off-topic declined": 0.0, "Xbox answered": 1.0}
    assert result.table().splitlines()[1].split()[-2:] == ["0%", "100%"]
    assert result.examples(1).items[0]["prompt"] == "Which game is best?", "differences come first"
