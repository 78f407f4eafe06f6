"""Exercises with self-checks for the course notebooks.

Each exercise is a short task with a blank (``...``) the learner fills in; ``check(name, answer)`` then
prints **PASS**, or a **HINT** that names what is wrong. A blank answer gets the exercise's first hint,
never an error, so every notebook runs top to bottom exactly as learners get it (and under nbval).

The reference solution lives beside each check (``solution(name)`` returns it), and
``tests/test_exercises.py`` runs every check with the solution, a wrong answer and a blank.
Where the right answer depends on what the learner's run produced (a confusion matrix, a request, a
model), the check takes that object as a keyword argument and computes the truth from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Phi3LabError


@dataclass(frozen=True)
class Feedback:
    passed: bool
    message: str

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'HINT'}: {self.message}"


@dataclass(frozen=True)
class Exercise:
    name: str
    notebook: str  # "00" ... "05"
    start: str  # the hint for a blank answer: where to begin
    grade: Callable[..., Feedback]  # (answer, **context) for a filled-in answer
    solution: Callable[..., object]  # (**context) -> a reference answer


EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, notebook: str, start: str, solution: Callable[..., object]):
    """Register the decorated grading function as the check of exercise ``name``."""
    def register(grade):
        EXERCISES[name] = Exercise(name, notebook, start, grade, solution)
        return grade
    return register


def get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise Phi3LabError(f"no exercise named {name!r}. Exercises: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def is_blank(answer) -> bool:
    """``...``, None, an empty string or container, or a mapping whose values are all still ``...``."""
    if answer is None or answer is Ellipsis:
        return True
    if isinstance(answer, (str, list, tuple, set, dict)) and not answer:
        return True
    return isinstance(answer, dict) and all(v is Ellipsis for v in answer.values())


def grade(name: str, answer, **context) -> Feedback:
    """The feedback for ``answer`` (blank: the exercise's first hint)."""
    exercise_ = get(name)
    if is_blank(answer):
        return Feedback(False, exercise_.start)
    return exercise_.grade(answer, **context)


def check(name: str, answer, **context) -> None:
    """Print PASS or a hint for the learner's ``answer`` to exercise ``name``."""
    print(grade(name, answer, **context))


def solution(name: str, **context):
    """A reference answer to exercise ``name`` (stuck? compare it with yours)."""
    return get(name).solution(**context)


def exercises_in(notebook: str) -> list[str]:
    return [name for name, ex in EXERCISES.items() if ex.notebook == notebook]


# ----- shared answer checks -------------------------------------------------------------------------
def choices_feedback(answer, expected: dict, why: dict, options) -> Feedback:
    """Grade a ``{key: choice}`` answer: every key present, every choice one of ``options``, and right.
    The hint names the first wrong key and why (``why[key]``)."""
    if not isinstance(answer, dict):
        return Feedback(False, f"answer with a dict, one entry per item: {{{', '.join(repr(k) for k in expected)}}}")
    missing = [k for k in expected if answer.get(k, ...) is Ellipsis]
    if missing:
        return Feedback(False, f"fill in {', '.join(map(repr, missing))} too")
    unknown = [v for v in answer.values() if v not in options]
    if unknown:
        return Feedback(False, f"{unknown[0]!r} is not one of the choices: {', '.join(map(repr, options))}")
    wrong = [k for k in expected if answer[k] != expected[k]]
    if wrong:
        return Feedback(False, f"{len(expected) - len(wrong)} of {len(expected)} right. Look again at {wrong[0]!r}: "
                               f"{why[wrong[0]]}")
    return Feedback(True, f"all {len(expected)} right. " + " ".join(why[k] for k in expected))


def record_findings(line: str, number: int = 1) -> tuple[object, list[str]]:
    """Parse and check one JSONL line with the course validator: (record or None, the findings as text)."""
    from .data.records import RawLine, check_record, parse

    raw = RawLine(number, line.strip().encode("utf-8"), len(line))
    record, bad_json = parse(raw)
    if bad_json is not None:
        return None, [bad_json.message]
    return record, [f"{f.field}: {f.message}" if f.field else f.message for f in check_record(record, number, raw.data)
                    if f.severity == "error"]


# ----- 00: before you fine-tune ---------------------------------------------------------------------
APPROACHES = ("prompting", "retrieval", "fine-tuning")
APPROACH_ANSWERS = {"a": "fine-tuning", "b": "retrieval", "c": "prompting", "d": "retrieval"}
APPROACH_WHY = {
    "a": "(a) a fixed tone and format, shown in hundreds of examples, is behaviour: what fine-tuning teaches.",
    "b": "(b) release notes that change every month are facts to look up at answer time, not to bake into weights.",
    "c": "(c) a one-off prototype needs no training: a clear prompt with an example does it today, for free.",
    "d": "(d) prices are facts that change; fine-tuning does not reliably teach facts, retrieval hands them over.",
}


@exercise("choose_approach", "00", "map each scenario (a-d) to 'prompting', 'retrieval' or 'fine-tuning', e.g. "
          "{'a': 'prompting', ...}. Ask: is it behaviour and style (fine-tuning), changing facts (retrieval), or "
          "something a good prompt already does (prompting)?", lambda: dict(APPROACH_ANSWERS))
def _choose_approach(answer) -> Feedback:
    return choices_feedback(answer, APPROACH_ANSWERS, APPROACH_WHY, APPROACHES)


TEACHES_ANSWERS = {"1": False, "2": True, "3": True, "4": False}
TEACHES_WHY = {
    "1": "(1) False: facts seen a few times in training are recalled unreliably; put prices in the prompt or "
         "retrieve them.",
    "2": "(2) True: tone, length and format are exactly what a few hundred examples teach.",
    "3": "(3) True: declining off-topic requests is a behaviour, learnt from examples that decline.",
    "4": "(4) False: a model fine-tuned on your data can still be wrong or unsafe; notebook 04 measures it.",
}


@exercise("what_finetuning_teaches", "00", "mark each statement (1-4) True or False, e.g. {'1': True, ...}. "
          "Fine-tuning teaches behaviour and style; does it teach facts?", lambda: dict(TEACHES_ANSWERS))
def _what_finetuning_teaches(answer) -> Feedback:
    return choices_feedback(answer, TEACHES_ANSWERS, TEACHES_WHY, (True, False))


# ----- 01: data preparation -------------------------------------------------------------------------
DIRTY_SAMPLE, REPAIR_LINE = "data/samples/dirty.jsonl", 5


def dirty_line(number: int = REPAIR_LINE) -> str:
    """Line ``number`` of the dirty sample, as text (the line the repair exercise starts from)."""
    from .paths import repo_path

    return repo_path(DIRTY_SAMPLE).read_bytes().decode("utf-8-sig").splitlines()[number - 1]


def _repaired_line() -> str:
    record = json.loads(dirty_line())
    system, first, second, reply = record["messages"]
    merged = {"role": "user", "content": f"{first['content']} {second['content']}"}
    return json.dumps({"messages": [system, merged, reply]})


@exercise("repair_line", "01", f"copy line {REPAIR_LINE} of the dirty sample (dirty_line() gives it), fix the two "
          "user messages in a row by merging them into one, and assign the whole line as a string", _repaired_line)
def _repair_line(answer) -> Feedback:
    if not isinstance(answer, str):
        return Feedback(False, "answer with the repaired line as one string (json.dumps(record) makes one)")
    record, findings = record_findings(answer, REPAIR_LINE)
    if findings:
        return Feedback(False, f"the validator still finds: {findings[0]}")
    original = json.loads(dirty_line())["messages"]
    users = [m["content"] for m in record["messages"] if m["role"] == "user"]
    said = [m["content"].rstrip(".").lower() for m in original if m["role"] == "user"]
    if len(users) != 1 or not all(s in users[0].lower() for s in said):
        return Feedback(False, "it validates, but keep everything the customer said: both sentences in one user "
                               "message")
    if record["messages"][-1] != original[-1]:
        return Feedback(False, "it validates, but keep the assistant's original reply: repair, don't rewrite")
    return Feedback(True, "the line validates and says what the customer said. Repairs like this need judgement, "
                          "which is why clean() drops such lines instead of guessing.")


def _own_conversation(system_prompt: str) -> dict:
    return {"messages": [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": "My controller keeps vibrating after the game ends."},
        {"role": "assistant", "content": "Try turning vibration off and on in Settings > Accessibility > "
                                         "Controller > Vibration settings, then restart the console."},
        {"role": "user", "content": "It still does it."},
        {"role": "assistant", "content": "Update the controller: Settings > Devices & connections > Accessories, "
                                         "select it, then Update. If it persists, contact Xbox Support."},
    ]}


@exercise("own_conversation", "01", "write one multi-turn training conversation as a dict {'messages': [...]}: "
          "the course's system prompt, then user and assistant alternating, at least two assistant replies",
          _own_conversation)
def _check_own_conversation(answer, system_prompt: str) -> Feedback:
    if not isinstance(answer, dict):
        return Feedback(False, "answer with a dict: {'messages': [{'role': 'system', 'content': ...}, ...]}")
    try:
        line = json.dumps(answer)
    except (TypeError, ValueError) as exc:
        return Feedback(False, f"the conversation cannot be written as JSON: {exc}")
    record, findings = record_findings(line)
    if findings:
        return Feedback(False, f"the validator finds: {findings[0]}")
    messages = record["messages"]
    if messages[0]["content"] != system_prompt:
        return Feedback(False, "use the course's system prompt word for word (SYSTEM_PROMPT): the model is trained "
                               "and deployed with the same one")
    if sum(m["role"] == "assistant" for m in messages) < 2:
        return Feedback(False, "valid, but single-turn: add a follow-up user message and a second assistant reply")
    return Feedback(True, f"a valid {len(messages)}-message conversation; the validator would accept it in train.jsonl.")


# ----- 02: local LoRA training ----------------------------------------------------------------------
ATTENTION = ["qkv_proj", "o_proj"]
OTHER_MODELS = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj",
                "up_proj": "gate_up_proj"}


def linear_layers(model_name: str) -> list[str]:
    """The model's linear layer names (its valid LoRA targets), from its architecture alone (no weights)."""
    from .models import linear_layer_names
    from .training.planning import weightless_model

    model = weightless_model(model_name)
    if model is None:
        raise Phi3LabError(f"cannot read {model_name}'s architecture here. Fix: run `phi3lab model prepare` first.")
    return linear_layer_names(model)


@exercise("attention_targets", "02", "list the target modules that adapt attention only, e.g. ['...', '...']; the "
          "panel above lists the model's real linear layers", lambda model="phi3-tiny-offline": list(ATTENTION))
def _attention_targets(answer, model: str = "phi3-tiny-offline") -> Feedback:
    if not isinstance(answer, (list, tuple)) or not all(isinstance(t, str) for t in answer):
        return Feedback(False, "answer with a list of layer names, e.g. ['qkv_proj']")
    available = linear_layers(model)
    for name in answer:
        if name in OTHER_MODELS:
            return Feedback(False, f"{name!r} is another model's name: Phi-3 fuses it into {OTHER_MODELS[name]!r}, "
                                   f"so {name!r} would match nothing and silently adapt nothing")
        if name not in available:
            return Feedback(False, f"{name!r} is not a linear layer of {model}; its layers are {', '.join(available)}")
    if set(answer) != set(ATTENTION):
        extra = sorted(set(answer) - set(ATTENTION))
        return Feedback(False, f"{extra[0]!r} belongs to the MLP, not attention" if extra else
                        "attention has two projections: the fused query/key/value one and the output one")
    return Feedback(True, "qkv_proj and o_proj are attention; gate_up_proj and down_proj are the MLP. The course "
                          "adapts all four, which usually learns more for the same rank.")


LR_CHOICES = ("a", "b", "c")


@exercise("tiny_learning_rate", "02", "pick 'a', 'b' or 'c': what does learning rate 1e-5 (50 times below the lab's "
          "5e-4) do to a short run's loss curve?", lambda: "b")
def _tiny_learning_rate(answer) -> Feedback:
    if answer not in LR_CHOICES:
        return Feedback(False, f"answer with one letter: {', '.join(map(repr, LR_CHOICES))}")
    if answer == "a":
        return Feedback(False, "each update is 50 times smaller: in the same 30 steps the weights travel 50 times "
                               "less far")
    if answer == "c":
        return Feedback(False, "diverging comes from steps that are too large and overshoot, not from steps that are "
                               "too small")
    return Feedback(True, "steps that small barely move the adapters: both losses stay near where they started. "
                          "Notebook 04's loss lab runs exactly this (run C), next to a healthy run.")


def lora_pair(model, layer: str = "qkv_proj"):
    """The first LoRA-wrapped ``layer`` of a peft model: its (A, B) weights."""
    for name, module in model.named_modules():
        if name.endswith(layer) and hasattr(module, "lora_A"):
            adapter = next(iter(module.lora_A))
            return module.lora_A[adapter].weight, module.lora_B[adapter].weight
    raise Phi3LabError(f"the model has no LoRA adapter on {layer}. Fix: pass the model load_trained() returned.")


def _lora_count(model) -> int:
    a, b = lora_pair(model)
    return a.numel() + b.numel()


@exercise("lora_parameters", "02", "compute r x (in + out) for one qkv_proj: read in_features and out_features "
          "in the printed layer, and r from the LoraConfig", _lora_count)
def _lora_parameters(answer, model) -> Feedback:
    if not isinstance(answer, int) or isinstance(answer, bool):
        return Feedback(False, "answer with a whole number of parameters, e.g. 16 * (576 + 960)")
    a, b = lora_pair(model)
    r, d_in, d_out = a.shape[0], a.shape[1], b.shape[0]
    if answer == d_in * d_out:
        return Feedback(False, "that is the frozen weight W itself (in x out); LoRA trains two thin matrices instead")
    if answer != a.numel() + b.numel():
        return Feedback(False, f"A is r x in and B is out x r; here r = {r}, in = {d_in}, out = {d_out}")
    return Feedback(True, f"A ({r} x {d_in}) and B ({d_out} x {r}) hold {answer:,} parameters, "
                          f"{answer / (d_in * d_out):.1%} of the frozen {d_in} x {d_out} weight beside them.")


# ----- 03: Azure fine-tuning ------------------------------------------------------------------------
HYPERPARAMETER_TASK = {"learning_rate": 1e-4, "epochs": 2, "batch_size": 8}


def _job_hyperparameters(config) -> dict:
    from .azure.finetuning import hyperparameters

    return hyperparameters(config.update(**HYPERPARAMETER_TASK))


@exercise("job_hyperparameters", "03", "write the hyperParameters map the job carries for learning rate 1e-4, "
          "2 epochs and batch size 8, as a dict {key: value}; the request printed above shows the keys",
          _job_hyperparameters)
def _check_job_hyperparameters(answer, config) -> Feedback:
    expected = _job_hyperparameters(config)
    if not isinstance(answer, dict):
        return Feedback(False, f"answer with a dict with the keys {', '.join(expected)}")
    if set(answer) != set(expected):
        return Feedback(False, f"use exactly the keys the job carries: {', '.join(expected)}")
    typed = [k for k, v in answer.items() if not isinstance(v, str)]
    if typed:
        return Feedback(False, f"{typed[0]} is a {type(answer[typed[0]]).__name__}: the service's REST specification "
                               f"types every hyperparameter as a string")
    wrong = [k for k in expected if answer[k] != expected[k]]
    if wrong:
        return Feedback(False, f"{wrong[0]} should carry the value the config holds, written as str() writes it")
    return Feedback(True, "these strings are exactly what submit_finetuning sends for these three settings.")


@exercise("job_request", "03", "read the dry-run request above: give {'method': ..., 'api_version': ...} of the "
          "request that creates the job", lambda request: {"method": request.method, "api_version": request.api_version})
def _job_request(answer, request) -> Feedback:
    if not isinstance(answer, dict) or set(answer) != {"method", "api_version"}:
        return Feedback(False, "answer with a dict with two keys: 'method' and 'api_version'")
    if str(answer["method"]).upper() != request.method:
        return Feedback(False, "creating a resource under a name you choose is an idempotent HTTP method: the "
                               "same request twice leaves one job. Look at the first word of the request line")
    if answer["api_version"] != request.api_version:
        return Feedback(False, "the api-version is in the URL's query string, after '?api-version='")
    return Feedback(True, f"{request.method} with api-version {request.api_version}: sending the same request again "
                          "updates the same job instead of creating a second one.")


# ----- 04: evaluation -------------------------------------------------------------------------------
def confused_pairs(confusion, labels) -> list[tuple[int, tuple[str, str]]]:
    """Pairs of different intents by how often they were mixed up (both directions), most first."""
    pairs = [(confusion[i][j] + confusion[j][i], (labels[i], labels[j]))
             for i in range(len(labels)) for j in range(i + 1, len(labels))]
    return sorted((p for p in pairs if p[0]), key=lambda p: -p[0])


@exercise("confused_intents", "04", "name two intents you expect the classifier to mix up, e.g. ('network_wifi', "
          "'...'): which customers' messages share words?",
          lambda report: confused_pairs(report.confusion, report.labels)[0][1])
def _confused_intents(answer, report) -> Feedback:
    if not isinstance(answer, (list, tuple)) or len(answer) != 2 or len(set(answer)) != 2:
        return Feedback(False, "answer with two different intent names, e.g. ('network_wifi', 'subscriptions')")
    unknown = [a for a in answer if a not in report.labels]
    if unknown:
        return Feedback(False, f"{unknown[0]!r} is not an intent; the intents are {', '.join(report.labels)}")
    ranked = confused_pairs(report.confusion, report.labels)
    if not ranked:
        return Feedback(False, "this classifier confused no two intents at all, so no pair can be right; compare "
                               "with the matrix below")
    top = ranked[:3]
    mixed = next((count for count, pair in ranked if set(pair) == set(answer)), 0)
    if any(set(pair) == set(answer) for _, pair in top):
        return Feedback(True, f"{answer[0]} and {answer[1]} were mixed up {_times(mixed)}, among the three most "
                              f"confused pairs. Find them in the matrix below.")
    return Feedback(False, f"{answer[0]} and {answer[1]} were mixed up {_times(mixed)}; the most confused pair, "
                           f"{top[0][1][0]} and {top[0][1][1]}, {_times(top[0][0])}. Why those? Read their "
                           f"messages in data/train.jsonl")


def _times(count: int) -> str:
    return f"{count} time{'' if count == 1 else 's'}"


LAB_ANSWERS = {"A": "healthy", "B": "overfitting", "C": "too slow"}
LAB_WHY = {
    "A": "(A) the baseline: a moderate learning rate on varied data, so both losses fall together.",
    "B": "(B) ten passes over 8 conversations: it memorises them, so the training loss keeps falling while the "
         "validation loss turns up.",
    "C": "(C) learning rate 1e-5 moves the adapters 50 times less per step: in 30 steps both losses barely move.",
}


@exercise("loss_patterns", "04", "predict each run's curve before you look: {'A': ..., 'B': ..., 'C': ...}, each "
          "one of 'healthy', 'overfitting', 'unstable', 'too slow'", lambda: dict(LAB_ANSWERS))
def _loss_patterns(answer) -> Feedback:
    from .experiments import PATTERNS

    return choices_feedback(answer, LAB_ANSWERS, LAB_WHY, PATTERNS)


@exercise("perplexity_from_loss", "04", "compute the fine-tuned model's perplexity from its loss "
          "(comparison.tuned.language.loss) with one function from math",
          lambda metrics: math.exp(metrics.loss))
def _perplexity(answer, metrics) -> Feedback:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return Feedback(False, "answer with a number: math.something(loss)")
    if math.isclose(answer, metrics.loss, rel_tol=1e-6):
        return Feedback(False, "that is the loss itself; perplexity undoes the logarithm inside cross-entropy")
    if not math.isclose(answer, metrics.perplexity, rel_tol=1e-6):
        return Feedback(False, "cross-entropy is a natural logarithm: which function undoes it?")
    return Feedback(True, f"exp({metrics.loss:.3f}) = {metrics.perplexity:.2f}: on average the model hesitates as if "
                          f"choosing among {metrics.perplexity:.0f} equally likely tokens.")


# ----- 05: deployment and clean-up ------------------------------------------------------------------
QUESTION = "How do I turn on my Xbox controller?"


def _client_call(system_prompt: str | None = None, **_):
    def ask(client, question):
        messages = [{"role": "user", "content": question}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return client.chat.completions.create(model="phi3lab", messages=messages, max_tokens=60)
    return ask


class _RecordingClient:
    """Looks like an ``openai`` client to the learner's function; records what ``chat.completions.create`` gets."""

    def __init__(self):
        self.calls: list[dict] = []
        self.chat = self
        self.completions = self

    def create(self, **kwargs):
        self.calls.append(kwargs)


@exercise("client_call", "05", "write ask(client, question): one call of client.chat.completions.create(...) with "
          "model, messages (the system prompt, then the question as the user's message) and max_tokens, returning "
          "its result", _client_call)
def _check_client_call(answer, system_prompt: str | None = None, client=None) -> Feedback:
    from pydantic import ValidationError

    from .serving.app import ChatRequest

    if not callable(answer):
        return Feedback(False, "answer with a function: def ask(client, question): return "
                               "client.chat.completions.create(...)")
    recorder = _RecordingClient()
    try:
        answer(recorder, QUESTION)
    except Exception as exc:  # the learner's function failed: say how, as a hint
        return Feedback(False, f"ask(client, question) raised {type(exc).__name__}: {exc}")
    if len(recorder.calls) != 1:
        return Feedback(False, f"ask should call client.chat.completions.create once; it called it "
                               f"{_times(len(recorder.calls))}")
    request = recorder.calls[0]
    missing = [k for k in ("model", "messages", "max_tokens") if k not in request]
    if missing:
        return Feedback(False, f"pass {missing[0]}=...: the SDK needs model and messages, and max_tokens bounds "
                               f"the cost of a reply")
    try:
        parsed = ChatRequest.model_validate(request)
    except ValidationError as exc:
        first = exc.errors()[0]
        return Feedback(False, f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
    if parsed.messages[-1].role != "user" or parsed.messages[-1].content != QUESTION:
        return Feedback(False, "end the messages with the question, as the user's message: "
                               "{'role': 'user', 'content': question}")
    if system_prompt and parsed.messages[0].content != system_prompt:
        return Feedback(False, "start with the system prompt the model was trained with (SYSTEM_PROMPT)")
    if client is None:
        return Feedback(True, "a request the endpoint accepts.")
    reply = answer(client, QUESTION).choices[0].message.content
    return Feedback(True, f"the endpoint answered {QUESTION!r} with: {reply!r}")


CLEANUP_STEPS = {"job": "cancel a fine-tuning job that is still running",
                 "endpoint": "delete the serverless endpoint",
                 "model": "delete the fine-tuned model",
                 "data": "delete the uploaded data assets"}


@exercise("cleanup_order", "05", f"put the four steps in an order Azure accepts, as a list of their keys: "
          f"{', '.join(map(repr, CLEANUP_STEPS))}", lambda: ["job", "endpoint", "model", "data"])
def _cleanup_order(answer) -> Feedback:
    if not isinstance(answer, (list, tuple)) or sorted(answer) != sorted(CLEANUP_STEPS):
        return Feedback(False, f"list each key once: {', '.join(map(repr, CLEANUP_STEPS))}")
    order = list(answer)
    if order[0] != "job":
        return Feedback(False, "a job still running would register a new model after you cleaned up: stop it first")
    if order.index("endpoint") > order.index("model"):
        return Feedback(False, "the service refuses to remove a model that a deployment still uses")
    return Feedback(True, "jobs first, then the endpoint, then the model: cleanup_azure(confirm=True) does it in "
                          "this order, and the endpoint is what bills every hour.")
