"""``phi3lab course``: runs notebooks in order in real kernels, keeps executed copies and HTML."""

from __future__ import annotations

import json

import nbformat
import pytest

from phi3lab.cli import main
from phi3lab.course import CourseError, course_notebooks, latest_run_dir


def write_notebook(folder, name, *sources, intro=""):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}\n\n{intro}")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, folder / name)
    return folder / name


@pytest.fixture
def course(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "dot.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    write_notebook(folder, "00_intro.ipynb", "import os\nprint('profile:', os.environ.get('PHI3LAB_PROFILE'))",
                   intro="![a diagram](../images/dot.svg)")
    write_notebook(folder, "01_fails.ipynb", "x = 1", "raise ValueError('train.jsonl line 3: no assistant turn')",
                   "print('never reached')")
    write_notebook(folder, "02_after.ipynb", "print('not run after a failure')")
    return folder


def outputs_text(path):
    nb = nbformat.read(path, as_version=4)
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)


def test_runs_in_order_stops_at_the_failing_cell_and_names_it(course, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PHI3LAB_PROFILE", "ci")  # the learner's defaults must not inherit it
    original = (course / "00_intro.ipynb").read_text()
    assert main(["course", "--notebooks-dir", str(course), "--out", str(tmp_path / "runs")]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["00_intro.ipynb", "ok"] and lines[2].split()[:2] == ["01_fails.ipynb", "FAILED"]
    assert "02_after" not in out
    assert "FAILED in 01_fails.ipynb, cell 3 (raise ValueError" in err and "no assistant turn" in err

    run = latest_run_dir(tmp_path / "runs")
    assert sorted(p.name for p in run.iterdir() if p.suffix in {".ipynb", ".html"}) == [
        "00_intro.html", "00_intro.ipynb", "01_fails.html", "01_fails.ipynb"]
    assert outputs_text(run / "00_intro.ipynb") == "profile: None\n"
    assert "no assistant turn" in (run / "01_fails.html").read_text()
    intro_html = (run / "00_intro.html").read_text()  # the diagram is inlined: the page stands alone
    assert 'src="data:image/svg+xml;base64,' in intro_html and 'src="../images/dot.svg"' not in intro_html
    summary = json.loads((run / "summary.json").read_text())
    assert summary["profile"] == "learner defaults" and [n["name"] for n in summary["notebooks"]] == [
        "00_intro.ipynb", "01_fails.ipynb"]
    assert (course / "00_intro.ipynb").read_text() == original  # the input notebook is never modified


def test_ci_profile_and_chosen_notebooks(course, tmp_path, capsys):
    assert main(["course", "00", "--profile", "ci", "--notebooks-dir", str(course), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("course: 1 notebooks passed in")
    assert outputs_text(latest_run_dir(tmp_path) / "00_intro.ipynb") == "profile: ci\n"


def test_a_secret_in_an_output_fails_the_run(tmp_path, capsys):
    write_notebook(tmp_path, "00_leak.ipynb", "print('api_key=' + 'a1b2c3d4e5f6' + 'a7b8c9d0e1f2')")
    assert main(["course", "--notebooks-dir", str(tmp_path), "--out", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert "secret-looking strings" in err and "a1b2c3d4e5f6a7b8" not in err  # reported masked


def test_unknown_notebook_is_a_clear_error(course):
    with pytest.raises(CourseError, match="no notebook matches '07'. Known notebooks: 00_intro.ipynb"):
        course_notebooks(course, ["07"])
