"""Learners do, not only watch: every notebook has exercises with self-checks and a quiz with answers.

- Exercises: each notebook calls ``check("<name>", ...)`` for every exercise ``phi3lab.exercises`` registers
  for it (two or three), on an answer left blank (``...``), so nbval runs them as learners get them.
- Quiz: a ``## Quiz`` markdown cell before "What you did", with at least four questions, each a
  ``<details>`` block with a ``<summary>`` question and a non-empty answer.
- Notebook 02 keeps its markdown cells short enough to read in one go (a quiz's collapsed answers aside).
"""

from __future__ import annotations

import ast
import re

import nbformat
import pytest

from phi3lab import exercises
from phi3lab.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
QUIZ_HEADING = re.compile(r"(?m)^##\s+Quiz\s*$")
DETAILS = re.compile(r"<details>\s*<summary>(?P<question>.*?)</summary>(?P<answer>.*?)</details>", re.S)
MIN_QUESTIONS = 4
MAX_MARKDOWN_02 = 1300  # "about 1,200 characters"


def ids(paths):
    return [p.name for p in paths]


def cells(path, kind):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == kind]


def parse(source: str) -> ast.Module:
    """A code cell as Python, its IPython syntax (``!command``, ``%magic``) translated first."""
    from IPython.core.inputtransformer2 import TransformerManager

    return ast.parse(TransformerManager().transform_cell(source))


def check_calls(source: str) -> list[tuple[str, ast.expr]]:
    """(exercise name, answer expression) of every ``check("name", answer, ...)`` call in a code cell."""
    found = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "check" \
                and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.args[0].value, node.args[1] if len(node.args) > 1 else None))
    return found


def blank_names(source: str) -> set[str]:
    """Names assigned ``...`` or a dict of ``...`` in a cell (the blanks a learner fills in)."""
    blanks = set()
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            values = value.values if isinstance(value, ast.Dict) else [value]
            if values and all(isinstance(v, ast.Constant) and v.value is Ellipsis for v in values):
                blanks.add(node.targets[0].id)
    return blanks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_every_exercise_is_checked_on_a_blank_answer(path):
    number = path.name[:2]
    code = [c.source for c in cells(path, "code")]
    calls = [call for source in code for call in check_calls(source)]
    blanks = set().union(*(blank_names(source) for source in code))
    names = [name for name, _ in calls]
    expected = exercises.exercises_in(number)
    assert 2 <= len(expected) <= 3, f"phi3lab.exercises registers {len(expected)} exercises for notebook {number}"
    assert sorted(names) == sorted(expected), \
        f"{path.name} checks {names}; phi3lab.exercises registers {expected} for it (each once)"
    unfilled = [name for name, answer in calls if not (isinstance(answer, ast.Name) and answer.id in blanks)]
    assert not unfilled, f"{path.name}: the answers to {unfilled} are not left blank (`my_answer = ...`)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_a_quiz_with_answers_closes_the_notebook(path):
    markdown = [c.source for c in cells(path, "markdown")]
    quizzes = [i for i, source in enumerate(markdown) if QUIZ_HEADING.search(source)]
    assert len(quizzes) == 1, f"{path.name}: expected one markdown cell with a '## Quiz' heading, found {len(quizzes)}"
    quiz = markdown[quizzes[0]]
    questions = DETAILS.findall(quiz)
    assert len(questions) >= MIN_QUESTIONS, f"{path.name}: the quiz has {len(questions)} <details> questions"
    empty = [q for q, a in questions if not q.strip() or not re.sub(r"<[^>]+>", "", a).strip()]
    assert not empty, f"{path.name}: quiz questions without a question or an answer: {empty}"
    assert quiz.count("<details>") == len(questions), f"{path.name}: every <details> needs a <summary> question"
    closing = next(i for i, source in enumerate(markdown) if re.search(r"(?im)^#+\s.*\bwhat you did\b", source))
    assert quizzes[0] <= closing, f"{path.name}: the quiz belongs before 'What you did'"


def test_notebook_02_markdown_cells_are_short():
    path = REPO_ROOT / "notebooks" / "02_local_lora_training.ipynb"
    long = [(n, len(source)) for n, source in enumerate(c.source for c in cells(path, "markdown"))
            if len(source) > MAX_MARKDOWN_02 and not QUIZ_HEADING.search(source)]
    assert not long, f"notebook 02 markdown cells over {MAX_MARKDOWN_02} characters (index, length): {long}"


def test_the_checks_find_what_they_look_for():
    source = 'my_pair = ...\nmarks = {"1": ..., "2": ...}\nfilled = 3\ncheck("a", my_pair)\nexercises.check("b", filled)'
    assert check_calls(source)[0][0] == "a" and check_calls(source)[1][0] == "b"
    assert blank_names(source) == {"my_pair", "marks"}
    quiz = "## Quiz\n\n<details><summary>Why?</summary>\n\nBecause.\n</details>\n<details><summary>How?</summary></details>"
    assert [(q, bool(re.sub(r"<[^>]+>", "", a).strip())) for q, a in DETAILS.findall(quiz)] == \
        [("Why?", True), ("How?", False)]
