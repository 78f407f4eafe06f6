"""Draw the course diagrams as SVG: ``python images/src/diagrams.py [OUT_DIR]`` (default images/).

The output is deterministic (fixed hash salt, no date), so the committed SVGs can be checked
against this script. Colours and fonts come from the course plot style (phi3lab.plots).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from phi3lab.plots import PALETTE  # noqa: E402

BLUE, ORANGE, GREEN, RED, PURPLE, SKY = PALETTE[:6]
# Text drawn as paths: the SVG looks the same in every browser, with or without the font.
SVG_SETTINGS = {"svg.hashsalt": "phi3lab", "svg.fonttype": "path", "font.family": "DejaVu Sans"}


def box(ax, x, y, w, h, title, body="", colour=BLUE, size=12):
    """A rounded box centred at (x, y): a bold title and an optional smaller body."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=colour, edgecolor="none", alpha=0.92))
    ax.text(x, y + (0.18 if body else 0), title, ha="center", va="center", color="white", fontsize=size,
            fontweight="bold")
    if body:
        ax.text(x, y - 0.2, body, ha="center", va="center", color="white", fontsize=size - 2.5, linespacing=1.25)


def frame(ax, x0, y0, x1, y1, label, colour):
    """A labelled outline: one Azure resource containing the next."""
    ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.02,rounding_size=0.15",
                                facecolor=colour, edgecolor=colour, alpha=0.10, linewidth=2))
    ax.text(x0 + 0.15, y1 - 0.3, label, fontsize=11.5, color=colour, fontweight="bold", va="center")


def arrow(ax, start, end, colour="#444444"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=18, color=colour, linewidth=2,
                                 shrinkA=2, shrinkB=2))


def note(ax, x, y, text, colour="#444444", size=10, **kw):
    ax.text(x, y, text, fontsize=size, color=colour, **kw)


def canvas(width, height, title):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    ax.set_title(title, fontsize=16, fontweight="bold", loc="left")
    return fig, ax


def pipeline_overview():
    """The course path: data, then local LoRA or Azure serverless, then evaluate, deploy, test, clean up."""
    fig, ax = canvas(16, 4.8, "The course pipeline: one dataset, two ways to fine-tune, one way to ship")
    w, h, mid, top, low = 2.2, 1.1, 2.3, 3.6, 1.0
    box(ax, 1.3, mid, w, h, "00 Prerequisites", "subscription, role,\nregion East US 2", PURPLE)
    box(ax, 4.0, mid, w, h, "01 Data", "chat JSONL: validate,\nclean, split, count", BLUE)
    box(ax, 7.0, top, 2.6, h, "02 Local LoRA", "transformers + peft,\nCPU stand-in or GPU", GREEN)
    box(ax, 7.0, low, 2.6, h, "03 Azure serverless", "AI Foundry fine-tuning job,\ndry run first", ORANGE)
    box(ax, 10.0, mid, w, h, "04 Evaluate", "loss, perplexity,\naccuracy, F1", BLUE)
    box(ax, 12.6, mid, w, h, "05 Deploy", "local server or\nserverless endpoint", RED)
    box(ax, 14.8, top, 1.9, h, "05 Test", "queries and the\ncontent filter", RED)
    box(ax, 14.8, low, 1.9, h, "05 Clean up", "endpoint first,\nthen the model", RED)
    arrow(ax, (2.45, mid), (2.85, mid))
    arrow(ax, (5.1, mid + 0.35), (5.65, top - 0.1))
    arrow(ax, (5.1, mid - 0.35), (5.65, low + 0.1))
    arrow(ax, (8.35, top - 0.1), (8.85, mid + 0.35))
    arrow(ax, (8.35, low + 0.1), (8.85, mid - 0.35))
    arrow(ax, (11.15, mid), (11.45, mid))
    arrow(ax, (13.75, mid + 0.35), (14.1, top - 0.6))
    arrow(ax, (14.8, top - 0.6), (14.8, low + 0.6))
    note(ax, 4.85, 3.3, "locally", ha="center")
    note(ax, 4.85, 1.25, "in Azure", ha="center")
    note(ax, 8.75, 3.25, "LoRA adapter", ha="left")
    note(ax, 8.75, 1.2, "fine-tuned model", ha="left")
    note(ax, 8.0, 0.05, "Every notebook runs offline on a CPU stand-in; Azure steps show the exact request before "
         "anything that costs money.", ha="center", style="italic")
    return fig


def lora_on_phi3():
    """LoRA adapters on Phi-3's fused projections: why the targets are qkv_proj and gate_up_proj."""
    fig, ax = canvas(13, 5.4, "LoRA on Phi-3: small trainable adapters beside the frozen, fused projections")
    for y, fused, fused_note, plain, label in [(3.6, "qkv_proj", "q, k, v fused", "o_proj", "attention"),
                                               (1.1, "gate_up_proj", "gate, up fused", "down_proj", "MLP")]:
        note(ax, 0.2, y + 0.95, label, size=12, style="italic")
        for x, name, body in [(2.3, fused, f"frozen W ({fused_note})"), (6.0, plain, "frozen W")]:
            box(ax, x, y + 0.25, 3.2, 0.9, name, body, SKY)
            box(ax, x, y - 0.62, 3.2, 0.6, "+ LoRA  B·A  (trainable)", "", GREEN, size=10.5)
    note(ax, 8.2, 3.9, "output = W·x + (alpha / r)·B·A·x", size=13, colour="#222222", fontweight="bold")
    note(ax, 8.2, 2.9, "A: r × d_in,  B: d_out × r\nonly A and B train: about 1% of the weights\n"
         "the adapter is saved on its own (a few MB)", size=11, colour="#333333", linespacing=1.5)
    note(ax, 8.2, 1.0, "Targets written for other models (q_proj, k_proj,\nv_proj, up_proj, gate_proj) match "
         "nothing here:\nthe run adapts almost nothing, silently.\nphi3lab targets qkv_proj, o_proj, gate_up_proj,"
         " down_proj.", size=11, colour=RED, linespacing=1.5)
    return fig


def azure_resources():
    """What the Azure notebooks create, inside what, and the order cleanup removes it."""
    fig, ax = canvas(13, 6, "Azure AI Foundry: what the course creates, and the order cleanup removes it")
    frame(ax, 0.2, 0.2, 12.8, 5.6, "Subscription: billing; the Microsoft.Network provider registered", PURPLE)
    frame(ax, 0.5, 0.45, 12.5, 5.0, "Resource group: you hold the Azure AI Developer role here", PURPLE)
    frame(ax, 0.8, 0.7, 12.2, 4.4, "AI Foundry hub + project: region East US 2 for Phi-3 fine-tuning", BLUE)
    y = 3.0
    box(ax, 2.8, y, 3.2, 1.15, "Fine-tuning job", "training + validation JSONL,\nhyperparameters (notebook 03)",
        ORANGE)
    box(ax, 6.5, y, 3.2, 1.15, "Fine-tuned model", "registered in the\nworkspace (notebook 03)", ORANGE)
    box(ax, 10.2, y, 3.2, 1.15, "Serverless endpoint", "billed while it exists;\nkeys (notebook 05)", RED)
    arrow(ax, (4.45, y), (4.85, y))
    arrow(ax, (8.15, y), (8.55, y))
    arrow(ax, (10.2, y - 0.7), (10.2, 1.75), RED)
    arrow(ax, (10.2, 1.6), (6.5, 1.6), RED)
    note(ax, 10.0, 2.1, "1  delete the endpoint", colour=RED, size=11, ha="right")
    note(ax, 6.6, 1.2, "2  then archive the model", colour=RED, size=11)
    note(ax, 1.1, 1.2, "The service refuses to remove a model\nthat still has a deployment.", size=10.5,
         style="italic", linespacing=1.4)
    return fig


def package_architecture():
    """The package's modules, what each owns, and the flow data -> config -> training -> run -> consumers."""
    fig, ax = canvas(16, 6.6, "Inside phi3lab: each concern has one owner; a run folder hands work on")
    w, h, mid = 2.5, 1.35, 4.2
    box(ax, 1.4, mid, w, h, "data/", "validate, clean,\nsplit, stats, cost", BLUE, size=11.5)
    box(ax, 4.3, mid, w, h, "config", "TrainConfig: the one\ntyped set of settings", PURPLE, size=11.5)
    box(ax, 7.4, mid, 2.9, h, "training/", "chat format, HF objects,\ntrainer, planning", GREEN, size=11.5)
    box(ax, 10.6, mid, 2.7, h, "run folder", "config, checkpoints,\nadapter, history", ORANGE, size=11.5)
    for y, title, body, colour in [(5.7, "evaluation", "metrics; experiments:\nwhich run, curves", BLUE),
                                   (4.2, "serving/", "app (OpenAI routes),\nprocess (LocalServer)", RED),
                                   (2.7, "azure/", "checks, fine-tuning,\ndeployment, cleanup", ORANGE)]:
        box(ax, 14.4, y, 2.7, 1.15, title, body, colour, size=11.5)
        arrow(ax, (11.95, mid + (y - mid) * 0.3), (13.0, y))
    for start, end in [((2.65, mid), (3.05, mid)), ((5.55, mid), (5.95, mid)), ((8.85, mid), (9.25, mid))]:
        arrow(ax, start, end)
    note(ax, 10.6, 5.15, "training/artifacts loads it", ha="center", size=10)
    note(ax, 0.2, 2.35, "Owners every module asks instead of deciding for itself", size=12, fontweight="bold",
         colour="#222222")
    owners = [("runs", "where runs, checkpoints,\nadapters, records live"),
              ("paths", "relative paths start\nat the repository root"),
              ("secrets", "one table: masking and\nthe notebook scan"),
              ("io", "atomic files and\nfolders"),
              ("widgets, plots", "views of what the\npackage computes"),
              ("cli", "the phi3lab command\nline, one parser each")]
    for i, (title, body) in enumerate(owners):
        box(ax, 1.3 + i * 2.35, 1.0, 2.15, 1.15, title, body, SKY, size=11)
    return fig


def portal_finetuning_wizard():
    """The portal's fine-tuning path, step by step, with the code that does the same in notebook 03."""
    fig, ax = canvas(16, 6.8, "Fine-tuning in the Azure AI Foundry portal, step by step (and the same step in code)")
    steps = [
        ("1  Open the project", "ai.azure.com: your\nhub-based project", PURPLE, "settings: project (notebook 00)"),
        ("2  Model catalog", "search, open a model,\npress Fine-tune", BLUE, "CATALOG, azure_model_name()"),
        ("3  Model name", "name the fine-tuned\nmodel; Next", ORANGE, "registered model name (derived)"),
        ("4  Task and data", "task type: Chat completion;\ntraining data; Next", ORANGE, "TrainConfig.train_file"),
        ("5  Validation data", "a file, or automatic\nsplit; Next", ORANGE, "validation_file (None: split)"),
        ("6  Parameters", "batch size, learning-rate\nmultiplier, epochs", ORANGE,
         "batch_size, learning_rate,\nepochs (absolute values)"),
        ("7  Submit", "the job starts, billed\nby training tokens", RED, "submit_finetuning(confirm=True)"),
        ("8  Status: Completed", "Queued, Running,\nCompleted; then deploy", GREEN, "monitor_job / watch()"),
    ]
    w, h = 3.2, 1.45
    for i, (title, body, colour, code) in enumerate(steps):
        x, y = 2.0 + (i % 4) * 4.0, 5.0 if i < 4 else 2.1
        box(ax, x, y, w, h, title, body, colour, size=12)
        note(ax, x, y - h / 2 - 0.3, f"code: {code}", ha="center", va="top", size=9.5, style="italic",
             linespacing=1.3)
        if i % 4 != 3:
            arrow(ax, (x + w / 2 + 0.05, y), (x + 4.0 - w / 2 - 0.05, y))
    arrow(ax, (14.0, 5.0 - h / 2 - 0.75), (2.0, 2.1 + h / 2 + 0.05))
    note(ax, 15.75, 0.2, "The wizard asks for a learning-rate multiplier (of the pretraining rate); the SDK and "
         "the course's config send the absolute learning rate.", ha="right", size=10, colour=RED)
    return fig


DIAGRAMS = {"pipeline_overview": pipeline_overview, "lora_on_phi3": lora_on_phi3, "azure_resources": azure_resources,
            "package_architecture": package_architecture, "portal_finetuning_wizard": portal_finetuning_wizard}


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(SVG_SETTINGS):
        for name, draw in DIAGRAMS.items():
            fig = draw()
            fig.savefig(out_dir / f"{name}.svg", format="svg", bbox_inches="tight",
                        metadata={"Date": None, "Creator": None})
            plt.close(fig)
            print(f"wrote {out_dir / name}.svg")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
