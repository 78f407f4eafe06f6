"""``phi3lab course``: run every notebook headless, in order, and keep executed copies and HTML."""

from __future__ import annotations

import sys
from pathlib import Path


def register(commands) -> None:
    parser = commands.add_parser("course", help="run the notebooks headless, in order (executed copies + HTML)")
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="only these notebooks (file name or number, e.g. 01); default: all, in order")
    parser.add_argument("--profile", choices=["ci"], default=None,
                        help="'ci': the few-step profile CI uses; default: the learner's defaults")
    parser.add_argument("--notebooks-dir", type=Path, default=None, help="folder of NN_name.ipynb (default notebooks/)")
    parser.add_argument("--out", type=Path, default=None, help="parent folder of the run folder (default course-runs/)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default 3600)")
    parser.set_defaults(handler=run)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def run(args) -> int:
    from ..course import COURSE_RUNS_DIR, course_notebooks, new_run_dir, run_course

    notebooks = course_notebooks(args.notebooks_dir, args.notebooks)
    run_dir = new_run_dir(args.out or COURSE_RUNS_DIR)
    print(f"running {len(notebooks)} notebooks with {args.profile or 'the learner defaults'} profile into {run_dir}")
    width = max(len(nb.name) for nb in notebooks)

    def started(path):
        print(f"  {path.name:<{width}}  ", end="", flush=True)

    def finished(result):
        status = "ok" if result.ok else "FAILED"
        print(f"{status:<6} {_minutes(result.seconds):>9}", flush=True)

    results = run_course(notebooks, run_dir, args.profile, args.timeout, on_start=started, on_result=finished)
    total = _minutes(sum(r.seconds for r in results))
    failed = next((r for r in results if not r.ok), None)
    if failed is None:
        print(f"course: {len(results)} notebooks passed in {total}; executed copies and HTML in {run_dir}")
        return 0
    reason = failed.error or "secret-looking strings in outputs: " + "; ".join(failed.secrets)
    print(f"course: FAILED in {failed.name}, {reason} (after {total}; see {failed.html})", file=sys.stderr)
    return 1
