"""``phi3lab data validate|clean|split|stats|cost FILE``: the data-preparation tools.

Exit codes: 0 when the file is valid (or the action succeeded), 1 when it has errors, 2 for a
problem the message explains (missing file, bad option).
"""

import json


def register(commands) -> None:
    parser = commands.add_parser("data", help="validate, clean, split and describe chat JSONL files")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    validate = _action(sub, "validate", "check every line; exit 1 when there are errors", run_validate)
    _add_model(validate)
    validate.add_argument("--max-tokens", type=int, help="token limit (default: the model's context length)")

    clean = _action(sub, "clean", "write a cleaned copy; the input is never changed", run_clean)
    clean.add_argument("output", help="where the cleaned file goes (must differ from FILE)")
    _add_model(clean)
    clean.add_argument("--max-tokens", type=int, help="drop longer conversations (default: the context length)")
    clean.add_argument("--system-prompt", help="add this system prompt to conversations without one")
    clean.add_argument("--labels", help="labels file of FILE, carried over to --labels-output")
    clean.add_argument("--labels-output", help="labels of the kept conversations")

    split = _action(sub, "split", "seeded train/validation split (stratified with --labels)", run_split)
    split.add_argument("train", help="train output file")
    split.add_argument("validation", help="validation output file")
    split.add_argument("--labels", help="labels file of FILE: stratify, and write <output>_labels.jsonl")
    split.add_argument("--validation-fraction", type=float, default=0.1)
    split.add_argument("--seed", type=int, default=42)

    stats = _action(sub, "stats", "token and turn distributions, label balance", run_stats)
    _add_model(stats)
    stats.add_argument("--labels", help="labels file of FILE")

    cost = _action(sub, "cost", "estimate the Azure training cost", run_cost)
    _add_model(cost, structure_only=False)
    cost.add_argument("--epochs", type=int, required=True)
    cost.add_argument("--price-per-1k", type=float, required=True,
                      help="price per 1,000 training tokens, from the portal's 'Pricing and terms' tab")
    cost.add_argument("--max-tokens", type=int, help="cap per conversation (default: the context length)")


def _action(sub, name: str, help_text: str, handler):
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("file", help="chat JSONL file")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=handler)
    return parser


def _add_model(parser, structure_only: bool = True) -> None:
    parser.add_argument("--model", help="catalog model whose tokenizer counts tokens (default: this machine's)")
    if structure_only:
        parser.add_argument("--structure-only", action="store_true", help="skip token counting (fast)")


def _tokenizer(args):
    from ..models import default_model_name

    if getattr(args, "structure_only", False):
        return None
    return args.model or default_model_name()


def _show(args, result) -> None:
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())


def run_validate(args) -> int:
    from ..data import validate

    report = validate(args.file, tokenizer=_tokenizer(args), max_tokens=args.max_tokens)
    _show(args, report)
    return 0 if report.ok else 1


def run_clean(args) -> int:
    from ..data import clean

    report = clean(args.file, args.output, tokenizer=_tokenizer(args), max_tokens=args.max_tokens,
                   system_prompt=args.system_prompt, labels=args.labels, labels_dst=args.labels_output)
    _show(args, report)
    return 0


def run_split(args) -> int:
    from ..data import split

    _show(args, split(args.file, args.train, args.validation, labels=args.labels,
                      validation_fraction=args.validation_fraction, seed=args.seed))
    return 0


def run_stats(args) -> int:
    from ..data import stats

    _show(args, stats(args.file, tokenizer=_tokenizer(args), labels=args.labels))
    return 0


def run_cost(args) -> int:
    from ..data import estimate_cost

    _show(args, estimate_cost(args.file, args.model or _tokenizer(args), epochs=args.epochs,
                              price_per_1k_tokens=args.price_per_1k, max_tokens=args.max_tokens))
    return 0
