"""Local cleanup: stop course servers, remove checkpoints, runs and caches, saying what and how much.

``local_cleanup()`` lists what it would remove and the space it would free; ``confirm=True``
does it. Categories are opt-in per call: ``servers`` (running local endpoints started by any
notebook or script, plus their logs), ``checkpoints`` (intermediate ``checkpoint-N`` folders of
training runs; the final adapter stays), ``runs`` (everything under ``runs/``, adapters
included) and ``caches`` (the converted offline model; rebuilt in about 30 s when needed).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .paths import RUNS_DIR, cache_dir
from .serving import SERVER_DIR


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


def _server_items() -> list[Item]:
    import psutil

    items = []
    for record_path in sorted(SERVER_DIR.glob("server-*.json")):
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            process = psutil.Process(record["pid"])
            alive = "phi3lab.serving" in " ".join(process.cmdline())  # a reused pid is someone else's process
        except (ValueError, KeyError, OSError, psutil.Error):
            record, alive = {}, False
        what = (f"server pid {record['pid']} at {record['url']} (stop it)" if alive
                else f"{record_path.name}: record of a server that no longer runs")
        items.append(Item("server", record_path, record_path.stat().st_size, what, record.get("pid") if alive else None))
    # Logs come after the servers, so a running server is stopped before its log is removed.
    items += [Item("server log", log, log.stat().st_size, str(log.relative_to(RUNS_DIR.parent)))
              for log in sorted(SERVER_DIR.glob("server-*.log"))]
    return items


def _checkpoint_items() -> list[Item]:
    folders = sorted(p for p in RUNS_DIR.rglob("checkpoint-*") if p.is_dir())
    return [Item("checkpoint", p, folder_size(p), str(p.relative_to(RUNS_DIR.parent))) for p in folders]


def plan_local_cleanup(servers: bool = True, checkpoints: bool = True, runs: bool = False,
                       caches: bool = False) -> list[Item]:
    """What ``local_cleanup`` would remove, with sizes (reads only)."""
    items = _server_items() if servers else []
    if runs and RUNS_DIR.exists():
        items += [Item("runs", p, folder_size(p), f"{p.relative_to(RUNS_DIR.parent)} (adapters, logs, outputs)")
                  for p in sorted(RUNS_DIR.iterdir()) if p != SERVER_DIR]
    elif checkpoints and RUNS_DIR.exists():
        items += _checkpoint_items()
    if caches and cache_dir().exists():
        items.append(Item("cache", cache_dir(), folder_size(cache_dir()),
                          f"{cache_dir()} (converted offline model; rebuilt on next use)"))
    return items


def local_cleanup(servers: bool = True, checkpoints: bool = True, runs: bool = False, caches: bool = False,
                  confirm: bool = False) -> LocalCleanupReport:
    """List (default) or, with ``confirm=True``, remove the chosen categories; says how much space is freed."""
    items = plan_local_cleanup(servers, checkpoints, runs, caches)
    if confirm:
        for item in items:
            item.outcome = _remove(item)
    return LocalCleanupReport(not confirm, items)


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
