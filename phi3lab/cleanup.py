"""Local cleanup: stop course servers, remove checkpoints, runs and caches, saying what and how much.

``local_cleanup()`` lists what it would remove and the space it would free; ``confirm=True``
does it. Categories are opt-in per call: ``servers`` (running local endpoints started by any
notebook or script, plus their logs), ``checkpoints`` (intermediate ``checkpoint-N`` folders of
training runs; the final adapter stays), ``exports`` (ONNX exports of runs, hundreds of MB each; ``phi3lab
export`` builds one again from the run), ``runs`` (everything under the runs root, adapters
included) and ``caches`` (the converted offline model; rebuilt in about 30 s when needed).
Where things are comes from ``phi3lab.runs`` (``PHI3LAB_RUNS``, read at call time) and the
server records from ``phi3lab.serving.process``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .azure.guard import strict_confirm
from .paths import cache_dir
from .runs import runs_root, server_dir, training_runs


@dataclass
class Item:
    kind: str
    path: Path
    size: int
    what: str
    pid: int | None = None
    outcome: str = ""


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass
class LocalCleanupReport:
    dry_run: bool
    items: list[Item] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(i.size for i in self.items)

    def summary(self) -> str:
        if not self.items:
            return "Nothing to clean up."
        verb = "Would free" if self.dry_run else "Freed"
        head = ("DRY RUN: nothing was removed. Run again with confirm=True to remove the items below."
                if self.dry_run else "Removed:")
        lines = [head]
        for item in self.items:
            done = f" -> {item.outcome}" if item.outcome else ""
            lines.append(f"  {item.kind:<11} {human_size(item.size):>9}  {item.what}{done}")
        lines.append(f"{verb} {human_size(self.total)} in total.")
        return "\n".join(lines)

    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


def _shown(path: Path) -> str:
    """A path as the learner knows it: from the runs root's parent (``runs/lora/checkpoint-20``)."""
    return str(path.relative_to(runs_root().parent))


def _server_items() -> list[Item]:
    from .serving.process import server_logs, server_records

    items = []
    for record in server_records():
        alive = record.alive
        what = (f"server pid {record.pid} at {record.url} (stop it)" if alive
                else f"{record.path.name}: record of a server that no longer runs")
        items.append(Item("server", record.path, record.path.stat().st_size, what, record.pid if alive else None))
    # Logs come after the servers, so a running server is stopped before its log is removed.
    items += [Item("server log", log, log.stat().st_size, _shown(log)) for log in server_logs()]
    return items


def _checkpoint_items() -> list[Item]:
    folders = [folder for run in training_runs(finished_only=False) for folder in run.checkpoint_dirs()]
    return [Item("checkpoint", p, folder_size(p), _shown(p)) for p in folders]


def _export_items() -> list[Item]:
    folders = [run.exports_dir for run in training_runs(finished_only=False) if run.exports_dir.is_dir()]
    return [Item("export", p, folder_size(p), f"{_shown(p)} (rebuilt by phi3lab export)") for p in folders]


def plan_local_cleanup(servers: bool = True, checkpoints: bool = True, runs: bool = False,
                       caches: bool = False, exports: bool = True) -> list[Item]:
    """What ``local_cleanup`` would remove, with sizes (reads only)."""
    items = _server_items() if servers else []
    root = runs_root()
    if runs and root.exists():
        items += [Item("runs", p, folder_size(p), f"{_shown(p)} (adapters, logs, outputs)")
                  for p in sorted(root.iterdir()) if p != server_dir()]
    else:
        items += (_checkpoint_items() if checkpoints else []) + (_export_items() if exports else [])
    if caches and cache_dir().exists():
        items.append(Item("cache", cache_dir(), folder_size(cache_dir()),
                          f"{cache_dir()} (converted offline model; rebuilt on next use)"))
    return items


def local_cleanup(servers: bool = True, checkpoints: bool = True, runs: bool = False, caches: bool = False,
                  exports: bool = True, confirm: bool = False) -> LocalCleanupReport:
    """List (default) or, with ``confirm=True``, remove the chosen categories; says how much space is freed."""
    act = strict_confirm(confirm)
    items = plan_local_cleanup(servers, checkpoints, runs, caches, exports)
    if act:
        for item in items:
            item.outcome = _remove(item)
    return LocalCleanupReport(not act, items)


def _remove(item: Item) -> str:
    if item.pid:
        import psutil

        try:
            process = psutil.Process(item.pid)
            process.terminate()
            try:
                process.wait(10)
            except psutil.TimeoutExpired:
                process.kill()
        except psutil.NoSuchProcess:
            pass
    if item.path.is_dir():
        shutil.rmtree(item.path, ignore_errors=True)
    else:
        item.path.unlink(missing_ok=True)
    return "stopped and removed" if item.pid else "removed"
