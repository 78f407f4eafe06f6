"""``phi3lab azure ...``: checks, fine-tuning submit/monitor/metrics, cleanup, scale-out. Dry run by default."""

from __future__ import annotations


def register(commands) -> None:
    parser = commands.add_parser("azure", help="Azure AI Foundry: checks, serverless fine-tuning, scale-out")
    sub = parser.add_subparsers(dest="azure_command", metavar="ACTION", required=True)

    check = sub.add_parser("check", help="prerequisite checks (pass/fail/skipped, each with its fix)")
    check.add_argument("--model", help="catalog name of the model to prefer (default: the course config's; "
                                       "its documented successor where the registry no longer offers it)")
    check.set_defaults(handler=_check)

    provider = sub.add_parser("register-provider", help="register Microsoft.Network (dry run without --confirm)")
    provider.add_argument("--confirm", action="store_true", help="really send the registration")
    provider.set_defaults(handler=_register)

    submit = sub.add_parser("submit", help="serverless fine-tuning job (dry run without --confirm)")
    submit.add_argument("--config", required=True, help="TrainConfig YAML/JSON (batch size, learning rate, epochs)")
    submit.add_argument("--model", help="catalog name to prefer (default: the config's model); the registry decides "
                                        "between it and its documented successor")
    submit.add_argument("--price", type=float, help="price per 1K training tokens, from the portal's Pricing tab")
    submit.add_argument("--confirm", action="store_true", help="really upload and submit (costs money)")
    submit.set_defaults(handler=_submit)

    monitor = sub.add_parser("monitor", help="watch a job until it ends (resumable by name)")
    monitor.add_argument("job")
    monitor.add_argument("--timeout", type=float, default=6 * 3600, help="seconds before giving up watching")
    monitor.set_defaults(handler=_monitor)

    metrics = sub.add_parser("metrics", help="save a job's training/validation loss as a metrics history "
                                             "(fine-tuning jobs, and phi3lab-train-* jobs on managed compute)")
    metrics.add_argument("job")
    metrics.add_argument("--out", required=True, help="JSON file to write (same format as local training)")
    metrics.set_defaults(handler=_metrics)

    cleanup = sub.add_parser("cleanup", help="list the course's Azure resources; --confirm cancels and deletes them")
    cleanup.add_argument("--confirm", action="store_true", help="really cancel, delete (or archive) them")
    cleanup.set_defaults(handler=_cleanup)

    group = sub.add_parser("delete-resource-group",
                           help="last step: delete the resource group if the course created it (tag course=phi3lab)")
    group.add_argument("--confirm", action="store_true", help="really delete the group and everything in it")
    group.set_defaults(handler=_delete_group)

    job = sub.add_parser("train-job", help="`phi3lab train` as an Azure ML command job on a GPU cluster "
                                           "(managed compute: Phi-3-mini itself, one process per GPU)")
    job.add_argument("--config", required=True)
    job.add_argument("--compute", default="phi3lab-gpu", help="the compute cluster's name")
    job.add_argument("--nodes", type=int, default=1, help="nodes the job runs on")
    job.add_argument("--gpus", type=int, help="GPUs per node (default: the cluster's VM size; must match it)")
    job.add_argument("--create-cluster", action="store_true",
                     help="first create the cluster (min nodes 0, quota checked first) unless it exists")
    job.add_argument("--vm-size", default="Standard_NC24ads_A100_v4", help="with --create-cluster: the GPU VM size")
    job.add_argument("--max-nodes", type=int, help="with --create-cluster: most nodes (default: --nodes)")
    job.add_argument("--low-priority", action="store_true", help="with --create-cluster: cheaper, preemptible nodes")
    job.add_argument("--idle-seconds", type=int, default=600, help="with --create-cluster: idle time before scale-down")
    job.add_argument("--confirm", action="store_true", help="really create and submit (billed per node-hour)")
    job.set_defaults(handler=_train_job)

    launch = sub.add_parser("launch-command", help="print the `accelerate launch` command for local GPUs "
                                                   "(`phi3lab launch` runs it)")
    launch.add_argument("--config", required=True)
    launch.add_argument("--gpus", type=int, required=True)
    launch.set_defaults(handler=_launch)


def _config(path):
    from ..config import TrainConfig

    return TrainConfig.load(path)


def _check(args) -> int:
    from ..azure.prerequisites import run_checks

    report = run_checks(model=args.model)
    print(report)
    return 0 if all(c.status != "fail" for c in report.checks) else 1


def _register(args) -> int:
    from ..azure.prerequisites import register_provider

    print(register_provider(confirm=args.confirm))
    return 0


def _submit(args) -> int:
    from ..azure.finetuning import submit_finetuning

    print(submit_finetuning(_config(args.config), confirm=args.confirm, model=args.model,
                            price_per_1k_tokens=args.price))
    return 0


def _monitor(args) -> int:
    from ..azure.monitor import monitor_job

    monitor_job(args.job, timeout_s=args.timeout)
    return 0


def _metrics(args) -> int:
    from ..azure.monitor import fetch_metrics
    from ..azure.scaleout import fetch_job_history

    if args.job.startswith("phi3lab-train-"):  # a managed-compute job: the trainer's own history.json
        history = fetch_job_history(args.job, save_to=args.out)
        print(f"{len(history.records)} records → {args.out}")
        return 0
    history = fetch_metrics(args.job)
    print(f"{len(history.records)} records → {history.save(args.out)}")
    return 0


def _cleanup(args) -> int:
    from ..azure.cleanup import cleanup_azure

    report = cleanup_azure(confirm=args.confirm)
    print(report)
    return 1 if any(r.outcome.startswith("FAILED") for r in report.resources) else 0


def _delete_group(args) -> int:
    from ..azure.cleanup import delete_course_resource_group

    print(delete_course_resource_group(confirm=args.confirm))
    return 0


def _train_job(args) -> int:
    from ..azure.compute import create_gpu_cluster
    from ..azure.scaleout import submit_training_job

    config = _config(args.config)
    if args.create_cluster:
        print(create_gpu_cluster(args.compute, args.vm_size, args.max_nodes or args.nodes,
                                 low_priority=args.low_priority, idle_seconds=args.idle_seconds, confirm=args.confirm))
    print(submit_training_job(config, args.compute, args.nodes, args.gpus, confirm=args.confirm))
    return 0


def _launch(args) -> int:
    import shlex

    from ..azure.scaleout import accelerate_command

    _config(args.config)  # fail early, with the field named, on a bad config
    print(shlex.join(accelerate_command(args.config, args.gpus)))
    return 0
