"""``phi3lab model``: list the catalog and prepare the offline stand-in."""


def register(commands) -> None:
    parser = commands.add_parser("model", help="model catalog and the offline stand-in")
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    prepare = sub.add_parser("prepare", help="convert the offline stand-in into the cache (once)")
    prepare.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    prepare.set_defaults(handler=run_prepare)
    sub.add_parser("list", help="show the model catalog").set_defaults(handler=run_list)


def run_prepare(args) -> int:
    from ..models import ensure_offline_model, offline_cache_valid

    cached = offline_cache_valid() and not args.force
    folder = ensure_offline_model(force=args.force)
    print(f"offline stand-in {'already cached' if cached else 'converted'}: {folder}")
    return 0


def run_list(args) -> int:
    from ..models import CATALOG, default_model_name

    default = default_model_name()
    for spec in CATALOG.values():
        mark = "*" if spec.name == default else " "
        print(f"{mark} {spec.name:<26} {spec.hub_id or '(offline)':<36} {spec.note}")
    return 0
