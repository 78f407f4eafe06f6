"""``phi3lab serve``: the local OpenAI-compatible endpoint in the foreground (Ctrl+C stops it).

The one command line of the server: ``LocalServer`` starts its child as ``python -m phi3lab.serving``
with these same options (plus the hidden ``--parent-pid``).
"""

import argparse
import os


def register(commands) -> None:
    parser = commands.add_parser("serve", help="serve the fine-tuned (or base) model on localhost, OpenAI-compatible")
    parser.add_argument("--host", default="127.0.0.1",
                        help="listen address (default: loopback only; any other needs an API key)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one, printed at start)")
    parser.add_argument("--model", default=None, help="catalog name of the base model (default: as the course picks)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--adapter", default=None,
                        help="LoRA adapter folder (default: the latest finished run's adapter, if any)")
    source.add_argument("--base", action="store_true", help="serve the base model even if an adapter exists")
    source.add_argument("--onnx", default=None, metavar="EXPORT",
                        help="serve a folder written by `phi3lab export --format onnx` with ONNX Runtime GenAI "
                             "(much faster on a CPU)")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into the weights (faster answers)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for generation (default: half the cores)")
    parser.add_argument("--api-key", default=None,
                        help="clients must send 'Authorization: Bearer KEY' (default: $PHI3LAB_API_KEY; the "
                             "variable is safer, since other users can read command lines)")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (default: warning)")
    # Set by LocalServer: the child exits when the notebook kernel that started it is gone.
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..serving.app import default_adapter
    from ..serving.process import API_KEY_ENV, check_exposure, free_port, serve_forever

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    check_exposure(args.host, api_key)  # before the banner and the model load
    adapter = None if args.base or args.onnx else (args.adapter or default_adapter())
    port = args.port or free_port(args.host)
    what = f"ONNX export {args.onnx}" if args.onnx else f"adapter {adapter}" if adapter else "the base model"
    print(f"serving {what} at http://{args.host}:{port}/v1 "
          f"(health: /health{'; API key required' if api_key else ''}). Ctrl+C stops it.", flush=True)
    serve_forever(args.host, port, args.model, adapter, args.merge, parent_pid=args.parent_pid,
                  log_level=args.log_level, threads=args.threads, api_key=api_key, onnx=args.onnx)
    return 0
