"""phi3lab.data: validator findings, cleaner, labels, split, stats, cost, CLI."""

import json
from pathlib import Path

import pytest

from phi3lab.cli import main as cli
from phi3lab.data import DataError, clean, estimate_cost, load_labels, read_conversations, split, stats, validate
from phi3lab.paths import DATA_DIR

DIRTY = DATA_DIR / "samples" / "dirty.jsonl"
SYSTEM = {"role": "system", "content": "You help with Xbox."}


def conv(user="Hi", assistant="Hello", system=True):
    return {"messages": ([SYSTEM] if system else []) + [{"role": "user", "content": user},
                                                          {"role": "assistant", "content": assistant}]}


def write(tmp_path, *lines, name="chat.jsonl"):
    path = tmp_path / name
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    from phi3lab.models import load_tokenizer

    return load_tokenizer("phi3-tiny-offline")


def codes(report):
    return {(f.line, f.code) for f in report.errors + report.warnings}


@pytest.mark.parametrize("line, code", [
    ("{not json", "invalid_json"),
    ("[1, 2]", "not_object"),
    ('{"msgs": []}', "missing_messages"),
    ('{"messages": "hi"}', "messages_not_list"),
    ('{"messages": []}', "empty_messages"),
    ('{"messages": [1]}', "message_not_object"),
    ('{"messages": [{"content": "x"}]}', "missing_role"),
    ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}', "missing_content"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "unknown_role"),
    ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}', "content_not_string"),
    ('{"messages": [{"role": "user", "content": " \\n"}, {"role": "assistant", "content": "a"}]}', "empty_content"),
    ('{"messages": [{"role": "user", "content": "q", "x": 1}, {"role": "assistant", "content": "a"}]}',
     "unknown_message_key"),
    ('{"messages": [{"role": "user", "content": "q"}]}', "no_assistant"),
    ('{"messages": [{"role": "assistant", "content": "a"}]}', "first_not_user"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, '
     '{"role": "assistant", "content": "a"}]}', "system_not_first"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}, '
     '{"role": "assistant", "content": "a"}]}', "not_alternating"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, '
     '{"role": "user", "content": "q2"}]}', "last_not_assistant"),
    ('{"messages": [{"role": "user", "content": "q\\ud800"}, {"role": "assistant", "content": "a"}]}', "bad_unicode"),
    ("[" * 100_000, "invalid_json"),
])
def test_each_structural_error_is_reported_with_its_line(tmp_path, line, code):
    report = validate(write(tmp_path, conv(), line))
    assert (2, code) in codes(report)
    assert not report.ok and report.n_lines == 2 and report.n_valid == 1
    finding = next(f for f in report.errors if f.code == code)
    assert finding.line == 2 and finding.message


def test_warnings_do_not_invalidate(tmp_path):
    path = write(tmp_path, conv(system=False), conv(system=False), "", {**conv("q", "a"), "intent": "x"})
    report = validate(path)
    assert report.ok and report.n_valid == 3
    assert codes(report) == {(1, "no_system"), (2, "no_system"), (2, "duplicate"), (3, "blank_line"),
                             (4, "unknown_key")}


def test_encoding_bom_crlf_and_huge_lines(tmp_path, monkeypatch):
    import phi3lab.data.records as records

    monkeypatch.setattr(records, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "raw.jsonl"
    good = json.dumps(conv()).encode()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n\xff\xfe\x00garbage\n" + b'{"messages": "' + b"x" * 5000 + b'"}\n'
                     + good.replace(b"Hi", b"Hey"))
    report = validate(path)
    assert codes(report) >= {(1, "bom"), (1, "crlf"), (2, "encoding"), (3, "line_too_long")}
    assert report.n_lines == 4 and report.n_valid == 2


def test_token_length_uses_the_model_tokenizer_and_chat_template(tmp_path, tokenizer):
    path = write(tmp_path, conv("short", "ok"), conv("word " * 300, "ok"))
    expected = len(tokenizer.apply_chat_template(conv("short", "ok")["messages"], tokenize=True, return_dict=True)
                   ["input_ids"])
    report = validate(path, tokenizer=tokenizer, max_tokens=100)
    assert [(f.line, f.code) for f in report.errors] == [(2, "too_long")]
    assert report.token_stats["conversation"].min == expected
    assert report.max_tokens == 100 and report.n_valid == 1
    assert validate(path, tokenizer=tokenizer).ok  # default limit: the stand-in's context (8192)
    assert validate(path, tokenizer=tokenizer).max_tokens == 8192


def test_token_percentiles_match_numpy(tmp_path, tokenizer):
    import numpy as np

    path = write(tmp_path, *[conv("word " * n, "ok") for n in range(1, 40, 3)])
    report = validate(path, tokenizer=tokenizer)
    lengths = [len(tokenizer(("word " * n), add_special_tokens=False)["input_ids"]) for n in range(1, 40, 3)]
    user = report.token_stats["user"]
    assert user.count == len(lengths) and user.max == max(lengths)
    assert user.p90 == pytest.approx(np.percentile(lengths, 90))
    assert user.p50 == pytest.approx(np.median(lengths))


def test_report_str_dict_and_raise(tmp_path):
    report = validate(write(tmp_path, conv(), "{bad"))
    assert "line 2" in str(report) and "invalid_json" in report.summary() and "phi3lab data clean" in str(report)
    assert json.loads(json.dumps(report.to_dict()))["n_errors"] == 1
    with pytest.raises(DataError, match=r"line 2 invalid_json.*phi3lab data clean"):
        report.raise_for_errors()
    assert validate(write(tmp_path, conv(), name="ok.jsonl")).raise_for_errors().ok


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        validate(tmp_path / "nope.jsonl")


def test_read_conversations_streams_and_names_bad_lines(tmp_path):
    path = write(tmp_path, conv("a"), "", conv("b"), "{bad", conv("c"))
    assert [m[1]["content"] for m in read_conversations(path, on_error="skip")] == ["a", "b", "c"]
    with pytest.raises(DataError, match="line 4"):
        list(read_conversations(path))


def test_clean_dirty_sample(tmp_path, tokenizer):
    before = DIRTY.read_bytes()
    out = tmp_path / "clean.jsonl"
    report = clean(DIRTY, out, tokenizer=tokenizer, system_prompt="You help with Xbox.")
    assert DIRTY.read_bytes() == before
    assert validate(out, tokenizer=tokenizer).ok and not validate(out).warnings
    assert report.n_kept == 5 and report.n_read == 19
    dropped = {code for _, code, _ in report.dropped}
    assert {"invalid_json", "unknown_role", "not_alternating", "empty_content", "duplicate", "no_assistant",
            "too_long", "content_not_string", "blank_line", "system_not_first", "messages_not_list",
            "last_not_assistant"} <= dropped
    fixed = " ".join(what for _, what in report.fixed)
    assert "byte-order mark" in fixed and "CRLF" in fixed and '"User" -> "user"' in fixed
    assert b"\r\n" not in out.read_bytes()


def test_clean_refuses_to_overwrite_its_input(tmp_path):
    path = write(tmp_path, conv())
    with pytest.raises(DataError, match="never modifies input"):
        clean(path, path)


def labelled(tmp_path, n=6):
    chat = write(tmp_path, *[conv(f"q{i}") for i in range(n)], name="all.jsonl")
    labels = write(tmp_path, *[{"line": i + 1, "intent": "ab"[i % 2]} for i in range(n)], name="all_labels.jsonl")
    return chat, labels


def unchanged(*paths):
    """Snapshot of files that must come out of a refused command byte for byte as they went in."""
    before = {p: p.read_bytes() for p in paths}
    return lambda: all(p.read_bytes() == content for p, content in before.items())


@pytest.mark.parametrize("argv", [
    # the labels input is the validation split's default labels output (v_labels.jsonl beside v.jsonl)
    ["data", "split", "{chat}", "{dir}/t.jsonl", "{dir}/v.jsonl", "--labels", "{dir}/v_labels.jsonl"],
    ["data", "split", "{chat}", "{dir}/train.jsonl", "{dir}/val.jsonl", "--labels", "{dir}/train_labels.jsonl"],
    ["data", "split", "{chat}", "{dir}/same.jsonl", "{dir}/same.jsonl"],
    ["data", "split", "{chat}", "{chat}", "{dir}/val.jsonl"],
    ["data", "split", "{chat}", "{dir}/t.jsonl", "{labels}", "--labels", "{labels}"],
    ["data", "clean", "{chat}", "{dir}/out.jsonl", "--labels", "{labels}", "--labels-output", "{dir}/out.jsonl"],
    ["data", "clean", "{chat}", "{dir}/out.jsonl", "--labels", "{labels}", "--labels-output", "{labels}"],
    ["data", "clean", "{chat}", "{labels}", "--labels", "{labels}", "--labels-output", "{dir}/l.jsonl"],
], ids=["split-labels-as-default-labels-output", "split-labels-as-train-labels", "split-same-outputs",
        "split-output-is-input", "split-output-is-labels", "clean-labels-output-is-output",
        "clean-labels-output-is-labels-input", "clean-output-is-labels-input"])
def test_every_data_write_path_refuses_inputs_and_colliding_outputs(tmp_path, capsys, argv):
    chat, labels = labelled(tmp_path)
    (tmp_path / "train_labels.jsonl").write_bytes(labels.read_bytes())
    (tmp_path / "v_labels.jsonl").write_bytes(labels.read_bytes())
    inputs = [chat, labels, tmp_path / "train_labels.jsonl", tmp_path / "v_labels.jsonl"]
    same = unchanged(*inputs)
    args = [a.format(chat=chat, labels=labels, dir=tmp_path) for a in argv]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert ("input file" in err or "same file" in err) and "Traceback" not in err
    assert same(), "an input file was changed"
    assert not (tmp_path / "same.jsonl").exists() and not (tmp_path / "out.jsonl").exists()


def test_clean_carries_labels(tmp_path):
    chat = write(tmp_path, conv("a"), "{bad", conv("b"), conv("a"))
    labels = write(tmp_path, {"line": 1, "intent": "x"}, {"line": 3, "intent": "y"}, {"line": 4, "intent": "x"},
                   name="labels.jsonl")
    clean(chat, tmp_path / "c.jsonl", labels=labels, labels_dst=tmp_path / "c_labels.jsonl")
    assert load_labels(tmp_path / "c.jsonl", tmp_path / "c_labels.jsonl") == ["x", "y"]


def test_load_labels_mismatches(tmp_path):
    chat = write(tmp_path, conv("a"), conv("b"))
    short = write(tmp_path, {"line": 1, "intent": "x"}, name="l1.jsonl")
    with pytest.raises(DataError, match="no label"):
        load_labels(chat, short)
    extra = write(tmp_path, {"line": 1, "intent": "x"}, {"line": 2, "intent": "y"}, {"line": 9, "intent": "z"},
                  name="l2.jsonl")
    with pytest.raises(DataError, match="lines 9"):
        load_labels(chat, extra)
    broken = write(tmp_path, {"line": "one", "intent": "x"}, name="l3.jsonl")
    with pytest.raises(DataError, match="l3.jsonl line 1"):
        load_labels(chat, broken)


def test_split_is_seeded_and_stratified(tmp_path):
    convs = [conv(f"question {i}") for i in range(40)]
    chat = write(tmp_path, *convs)
    labels = write(tmp_path, *[{"line": i + 1, "intent": "ab"[i % 2]} for i in range(40)], name="labels.jsonl")
    first = split(chat, tmp_path / "t.jsonl", tmp_path / "v.jsonl", labels=labels, validation_fraction=0.2)
    texts = (tmp_path / "t.jsonl").read_text(), (tmp_path / "v.jsonl").read_text()
    assert (first.n_train, first.n_validation) == (32, 8)
    assert first.label_counts == {"a": (16, 4), "b": (16, 4)}
    assert load_labels(tmp_path / "v.jsonl", tmp_path / "v_labels.jsonl").count("a") == 4
    split(chat, tmp_path / "t.jsonl", tmp_path / "v.jsonl", labels=labels, validation_fraction=0.2)
    assert ((tmp_path / "t.jsonl").read_text(), (tmp_path / "v.jsonl").read_text()) == texts
    with pytest.raises(DataError, match="validation_fraction"):
        split(chat, tmp_path / "t.jsonl", tmp_path / "v.jsonl", validation_fraction=1.5)


def test_stats_and_cost(tmp_path, tokenizer):
    chat = write(tmp_path, conv("a"), {"messages": conv("b")["messages"] + conv("c", system=False)["messages"]},
                 "{bad")
    result = stats(chat, tokenizer)
    assert result.n_conversations == 2 and result.n_skipped_lines == 1 and result.turns == {1: 1, 2: 1}
    assert result.multi_turn_share == 0.5 and len(result.conversation_tokens) == 2
    cost = estimate_cost(chat, tokenizer, epochs=3, price_per_1k_tokens=2.0, max_tokens=20)
    capped = sum(min(n, 20) for n in result.conversation_tokens)
    assert cost.billable_tokens == capped * 3 and cost.total == pytest.approx(capped * 3 / 1000 * 2.0)
    assert "Pricing and terms" in cost.summary()
    assert f"counted with the {Path(tokenizer.name_or_path).name} tokenizer" in cost.summary()


def test_cli_exit_codes(tmp_path, capsys):
    good = write(tmp_path, conv(), name="good.jsonl")
    assert cli(["data", "validate", str(good), "--structure-only"]) == 0
    capsys.readouterr()
    assert cli(["data", "validate", str(DIRTY), "--structure-only", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["errors"][0]["line"] == 3
    assert cli(["data", "validate", str(tmp_path / "missing.jsonl"), "--structure-only"]) == 2
    assert cli(["data", "clean", str(DIRTY), str(tmp_path / "c.jsonl"), "--structure-only"]) == 0
    assert cli(["data", "validate", str(tmp_path / "c.jsonl"), "--structure-only"]) == 0


def test_data_plots_return_figures(tmp_path, tokenizer):
    from phi3lab import plots

    chat = write(tmp_path, conv("a"), conv("b b b b"), conv("c"))
    labels = write(tmp_path, *[{"line": i, "intent": x} for i, x in enumerate("xyx", 1)], name="labels.jsonl")
    result = stats(chat, tokenizer, labels=labels)
    assert len(plots.plot_token_lengths(result, max_tokens=40).axes[0].patches) >= 5
    assert [p.get_height() for p in plots.plot_turns(result).axes[0].patches] == [3]
    assert sorted(p.get_width() for p in plots.plot_label_balance(result).axes[0].patches) == [1, 2]


# ----- issue 19: files with nothing to train on, files in another encoding, outputs that cannot be written --------
@pytest.mark.parametrize("content", ["", "\n", "  \n\t\n\n", "\r\n\r\n"], ids=["empty", "newline", "blank", "crlf"])
def test_a_file_without_conversations_is_an_error(tmp_path, capsys, content):
    path = tmp_path / "train.jsonl"
    path.write_text(content, encoding="utf-8", newline="")
    report = validate(path)
    assert not report.ok and report.counts["no_conversations"] == 1
    assert cli(["data", "validate", str(path), "--structure-only"]) == 1
    out = capsys.readouterr().out
    assert "holds no conversations" in out and "clean cannot add any" in out
    with pytest.raises(DataError, match="holds no conversations: it is empty or has only blank lines"):
        list(read_conversations(path))


def test_training_on_an_empty_file_refuses_before_loading_the_model(tmp_path, monkeypatch):
    from phi3lab.config import TrainConfig
    from phi3lab.training import chat_format

    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))
    empty = tmp_path / "train.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    config = TrainConfig(train_file=str(empty), validation_file=None)
    with pytest.raises(DataError, match=f"{empty}: the file holds no conversations"):
        chat_format.load_splits(config, tokenizer=None)


WIDE = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


@pytest.mark.parametrize("encoding", WIDE)
def test_utf16_and_utf32_files_are_recognised_and_named(tmp_path, capsys, encoding):
    path = tmp_path / "chat.jsonl"
    path.write_bytes((json.dumps(conv()) + "\n").encode(encoding) * 3)
    name = encoding.upper().replace("-LE", " LE").replace("-BE", " BE")
    name = name if " " in name else f"{name} LE"  # Python writes little-endian with a byte-order mark
    with pytest.raises(DataError, match=f"is {name} text; chat JSONL must be UTF-8"):
        validate(path)
    assert cli(["data", "validate", str(path), "--structure-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"iconv -f {name.replace(' ', '')} -t UTF-8" in err


def test_utf8_with_a_byte_order_mark_is_still_read(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_bytes((json.dumps(conv()) + "\n").encode("utf-8-sig"))
    assert validate(path).n_valid == 1


def _mkstemp_denied(*args, **kwargs):
    raise PermissionError(13, "Permission denied", kwargs.get("dir"))


@pytest.mark.parametrize("case", ["output is a folder", "output under a file", "folder not writable"])
def test_an_output_that_cannot_be_written_is_one_line_naming_it(tmp_path, capsys, monkeypatch, case):
    chat = write(tmp_path, *[conv(f"q{i}") for i in range(4)])
    (tmp_path / "folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    output = {"output is a folder": tmp_path / "folder", "output under a file": tmp_path / "a-file" / "out.jsonl",
              "folder not writable": tmp_path / "folder" / "out.jsonl"}[case]
    if case == "folder not writable":  # tests may run as root, whom chmod cannot stop
        monkeypatch.setattr("tempfile.mkstemp", _mkstemp_denied)
    for argv in (["data", "clean", str(chat), str(output), "--structure-only"],
                 ["data", "split", str(chat), str(output), str(tmp_path / "v.jsonl")]):
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err and "Fix:" in err
        assert {"output is a folder": f"{output} is a folder, where a file is needed",
                "output under a file": f"{tmp_path / 'a-file'} is a file, where a folder is needed",
                "folder not writable": f"no permission to write {output}"}[case] in err
    assert not (tmp_path / "v.jsonl").exists()
