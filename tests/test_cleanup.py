"""Local cleanup: lists before it removes, removes only what was asked, stops servers, reports space."""

from __future__ import annotations

import json
import os

import pytest

from phi3lab import cleanup
from phi3lab.cleanup import human_size, local_cleanup
from phi3lab.serving import LocalServer

RUN_CONFIG = b"run_name: lora\n"  # what makes a folder a training run (phi3lab.runs)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    monkeypatch.setenv("PHI3LAB_RUNS", str(runs))  # read at call time by phi3lab.runs
    monkeypatch.setattr(cleanup, "cache_dir", lambda: cache)
    for folder, size in ((runs / "lora" / "checkpoint-10", 3000), (runs / "lora" / "checkpoint-20", 5000),
                         (runs / "lora" / "adapter", 700), (cache / "models" / "phi3-tiny-offline", 9000)):
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"x" * size)
    (runs / "lora" / "config.yaml").write_bytes(RUN_CONFIG)
    return runs, cache


def test_default_is_a_dry_run_listing_checkpoints_with_sizes(tree):
    runs, _ = tree
    report = local_cleanup()
    assert report.dry_run and [i.path.name for i in report.items] == ["checkpoint-10", "checkpoint-20"]
    assert report.total == 8000 and "Would free 7.8 KB" in report.summary()
    assert (runs / "lora" / "checkpoint-10").exists()


def test_confirm_removes_only_checkpoints_and_is_idempotent(tree):
    runs, cache = tree
    report = local_cleanup(confirm=True)
    assert "Freed 7.8 KB" in report.summary()
    assert not list((runs / "lora").glob("checkpoint-*")) and (runs / "lora" / "adapter").exists() and cache.exists()
    assert local_cleanup(confirm=True).summary() == "Nothing to clean up."


def test_runs_and_caches_on_request(tree):
    runs, cache = tree
    report = local_cleanup(runs=True, caches=True, confirm=True)
    assert {i.kind for i in report.items} == {"runs", "cache"} and report.total == 17700 + len(RUN_CONFIG)
    assert not (runs / "lora").exists() and not cache.exists()


def test_a_running_server_is_stopped_and_its_files_removed(tree):
    runs, _ = tree
    server = LocalServer(adapter=None).start()
    try:
        plan = local_cleanup()
        assert any(i.kind == "server" and i.pid == server.process.pid for i in plan.items)
        assert server.running  # the dry run touched nothing
        local_cleanup(confirm=True)
        server.process.wait(15)
        assert not server.running and not list((runs / "serving").glob("server-*"))
    finally:
        server.stop()


def test_a_record_whose_pid_is_another_program_is_never_killed(tree):
    runs, _ = tree
    (runs / "serving").mkdir(parents=True)
    record = runs / "serving" / "server-1234.json"
    record.write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:1234"}))
    report = local_cleanup(checkpoints=False, confirm=True)
    assert [i.pid for i in report.items] == [None] and "no longer runs" in report.items[0].what
    assert not record.exists()  # the stale record goes; this test process is still alive to tell


def test_checkpoints_of_every_run_are_listed_as_the_learner_knows_them(tree):
    runs, _ = tree
    (runs / "nested" / "run2" / "checkpoint-5").mkdir(parents=True)
    (runs / "nested" / "run2" / "config.yaml").write_bytes(RUN_CONFIG)
    shown = sorted(i.what for i in local_cleanup().items)
    assert shown == ["runs/lora/checkpoint-10", "runs/lora/checkpoint-20", "runs/nested/run2/checkpoint-5"]


def test_exports_are_listed_and_removed_unless_kept(tree):
    runs, _ = tree
    export = runs / "lora" / "exports" / "onnx-int4-cpu"
    export.mkdir(parents=True)
    (export / "model.onnx.data").write_bytes(b"x" * 4000)
    exports = [i for i in local_cleanup().items if i.kind == "export"]
    assert [i.what for i in exports] == ["runs/lora/exports (rebuilt by phi3lab export)"] and exports[0].size == 4000
    local_cleanup(checkpoints=False, exports=False, confirm=True)
    assert export.exists()
    local_cleanup(checkpoints=False, confirm=True)
    assert not (runs / "lora" / "exports").exists() and (runs / "lora" / "checkpoint-10").exists()


def test_human_size():
    assert [human_size(n) for n in (5, 2048, 3 * 1024**3)] == ["5 B", "2.0 KB", "3.0 GB"]
