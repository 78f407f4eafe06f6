"""``phi3lab doctor``: the environment report."""

import json


def register(commands) -> None:
    parser = commands.add_parser("doctor", help="print an environment report (works offline)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..doctor import environment_report, format_report

    report = environment_report()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
