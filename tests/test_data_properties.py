"""Property-based tests: any bytes give a report (or a DataError naming UTF-16/32), never a crash; clean output
always validates, and clean never writes a file without conversations."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phi3lab.data import DataError, clean, validate
from phi3lab.data.records import wide_encoding

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
roles = st.sampled_from(["system", "user", "assistant", "User", " assistant ", "bot", ""]) | json_values
messages = st.lists(st.fixed_dictionaries({}, optional={"role": roles, "content": st.text(max_size=12) | json_values,
                                                         "name": st.text(max_size=4)}), max_size=5)
records = st.fixed_dictionaries({}, optional={"messages": messages | json_values, "intent": st.text(max_size=4)})
lines = st.one_of(records.map(json.dumps), json_values.map(json.dumps), st.text(max_size=40))
files = st.lists(st.one_of(lines.map(str.encode), st.binary(max_size=40)), max_size=8).flatmap(
    lambda parts: st.sampled_from([b"\n", b"\r\n"]).map(lambda end: end.join(parts)))


@SETTINGS
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_give_a_report(tmp_path, data):
    path = tmp_path / "any.jsonl"
    path.write_bytes(data)
    if wide_encoding(data[:4]):
        with pytest.raises(DataError, match="chat JSONL must be UTF-8"):
            validate(path)
        return
    report = validate(path)
    assert report.n_valid <= report.n_lines
    assert isinstance(report.summary(), str) and json.dumps(report.to_dict())


@SETTINGS
@given(data=files, prefix=st.sampled_from([b"", b"\xef\xbb\xbf"]))
def test_clean_output_always_validates_and_input_is_unchanged(tmp_path, data, prefix):
    src, dst = tmp_path / "src.jsonl", tmp_path / "dst.jsonl"
    dst.unlink(missing_ok=True)  # the folder is shared by every example
    src.write_bytes(prefix + data)
    if wide_encoding((prefix + data)[:4]) or validate(src).n_valid == 0:
        with pytest.raises(DataError, match="no conversation could be kept|chat JSONL must be UTF-8"):
            clean(src, dst)
        assert not dst.exists() and src.read_bytes() == prefix + data
        return
    report = clean(src, dst)
    assert src.read_bytes() == prefix + data
    after = validate(dst)
    assert after.ok and after.n_valid == report.n_kept == after.n_lines
    assert not any(f.code in ("duplicate", "blank_line", "unknown_key", "bom", "crlf") for f in after.warnings)
    assert report.n_read == validate(src).n_lines
    assert report.n_kept + report.n_dropped == report.n_read


@SETTINGS
@given(record=records | json_values, raw=st.sampled_from([b"", b"\\ud800"]))
def test_fast_path_agrees_with_the_detailed_checks(record, raw):
    from phi3lab.data.records import _detailed_checks, check_record

    assert check_record(record, 1, raw) == _detailed_checks(record, 1, raw)
