"""``phi3lab export --format onnx``: a trained run as an ONNX Runtime GenAI folder (see ``phi3lab.export``)."""


def register(commands) -> None:
    from ..export import FORMAT, LAYOUTS, PRECISIONS

    parser = commands.add_parser("export", help="export a trained run for fast local inference (ONNX Runtime GenAI)")
    parser.add_argument("--format", default=FORMAT, choices=[FORMAT], help="export format (default: onnx)")
    parser.add_argument("--run", default=None, help="run name or folder (default: the latest finished run)")
    parser.add_argument("--precision", default="int4", choices=sorted({p for ps in PRECISIONS.values() for p in ps}),
                        help="int4 (default, CPU or CUDA), fp32 (CPU) or fp16 (CUDA)")
    parser.add_argument("--device", default="cpu", choices=list(PRECISIONS), help="where it will run (default: cpu)")
    parser.add_argument("--layout", default="merged", choices=list(LAYOUTS),
                        help="merged: adapter folded into the weights (default); adapter: base model plus the "
                             "adapter as a separate adapter.onnx_adapter file")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<run>/exports/<variant>)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the run has not changed")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..export import export_onnx

    print(export_onnx(args.run, precision=args.precision, device=args.device, layout=args.layout, out_dir=args.out,
                      force=args.force))
    return 0
