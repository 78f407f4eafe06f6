"""Hyperparameter widgets bound to the one ``TrainConfig``: a view of the config and of its run plan.

``HyperparameterPanel(config).config`` is always a valid config: sliders take their bounds from
the config's declared ranges, so an out-of-range value cannot be entered. The numbers the panel
shows (steps, trainable parameters, a timed step) are computed by ``phi3lab.training.planning``.
Headless runs (nbval, CLI) never touch a widget and simply use the config's values.
"""

from __future__ import annotations

import dataclasses
import html
import math

import ipywidgets as w

from .config import PRESETS, TrainConfig, field_range
from .errors import ConfigError, Phi3LabError

DEFAULT_FIELDS = ("model", "learning_rate", "epochs", "batch_size", "grad_accum", "lora_r", "lora_alpha",
                  "lora_dropout", "target_modules", "max_seq_length", "gradient_checkpointing", "quantization")
LABELS = {"model": "model", "learning_rate": "learning rate", "epochs": "epochs", "batch_size": "batch size",
          "grad_accum": "grad accumulation", "lora_r": "LoRA r", "lora_alpha": "LoRA alpha",
          "lora_dropout": "LoRA dropout", "target_modules": "target modules", "max_seq_length": "max seq length",
          "max_steps": "max steps", "gradient_checkpointing": "checkpointing", "quantization": "base weights"}
_STYLE = {"description_width": "150px"}
_LAYOUT = {"width": "520px"}


def _control(name: str, config: TrainConfig, layer_names: list[str]) -> w.Widget:
    """The widget for one field, its bounds taken from the field's declared range."""
    from .models import CATALOG

    value = getattr(config, name)
    common = {"description": LABELS.get(name, name.replace("_", " ")), "style": _STYLE, "layout": _LAYOUT}
    low, high = field_range(name) if name in TrainConfig.model_fields and name != "target_modules" else (None, None)
    if name == "model":
        return w.Dropdown(options=list(CATALOG), value=value, **common)
    if name == "quantization":  # 4-bit/8-bit need a CUDA GPU; elsewhere training notes it and loads unquantized
        return w.Dropdown(options=[("unquantized", "none"), ("8-bit", "8bit"), ("4-bit NF4 (QLoRA)", "4bit")],
                          value=value, **common)
    if name == "target_modules":
        options = sorted(set(layer_names) | set(value))
        return w.SelectMultiple(options=options, value=tuple(value), rows=min(len(options), 6), **common)
    if name == "learning_rate":
        return w.FloatLogSlider(value=value, base=10, min=math.log10(low), max=math.log10(high), step=0.1,
                                readout_format=".1e", **common)
    if name == "max_seq_length":  # the range spans 32 to 131072: a text box reads better than a slider
        return w.BoundedIntText(value=value, min=low, max=high, step=32, **common)
    if isinstance(value, float):
        return w.FloatSlider(value=value, min=low, max=high, step=0.01, **common)
    if isinstance(value, bool):
        return w.Checkbox(value=value, **common)
    if isinstance(value, int):
        return w.IntSlider(value=value, min=low, max=high if high is not None and high <= 4096 else 4096, **common)
    return w.Text(value=str(value), **common)


def preset_values(name: str) -> dict:
    """A preset applied from scratch: fields any preset touches go back to their defaults first."""
    touched = {key for values in PRESETS.values() for key in values}
    return {**{key: TrainConfig.model_fields[key].default for key in touched}, **PRESETS[name]}


class HyperparameterPanel:
    """Widgets for the chosen config fields, live derived numbers, presets, and a warm-up timing."""

    def __init__(self, config: TrainConfig, fields: tuple[str, ...] | None = None, model=None):
        self._config = config
        self.fields = tuple(fields or DEFAULT_FIELDS)
        self.model = model
        self._shape_model = model  # used for layer names and parameter counts (a weightless copy if no model)
        self.seconds_per_step: float | None = None
        self._syncing = False
        self.controls: dict[str, w.Widget] = {}
        self.message = w.HTML()
        self.derived = w.HTML()
        for name in self.fields:
            control = _control(name, config, self._layer_names())
            control.add_class(f"phi3lab-{name.replace('_', '-')}")
            control.observe(lambda change, name=name: self._on_change(name, change["new"]), names="value")
            self.controls[name] = control
        self.preset = w.Dropdown(options=["(custom)", *PRESETS], value="(custom)", description="preset",
                                 style=_STYLE, layout=_LAYOUT)
        self.preset.add_class("phi3lab-preset")
        self.preset.observe(lambda change: self.apply_preset(change["new"]), names="value")
        self.warmup_button = w.Button(description="measure a warm-up step", icon="clock-o")
        self.warmup_button.add_class("phi3lab-warmup")
        self.warmup_button.on_click(lambda _: self.measure_warmup())
        self.widget = w.VBox([self.preset, *self.controls.values(), self.derived, self.warmup_button, self.message])
        self.widget.add_class("phi3lab-panel")
        self._refresh()

    # ----- the config --------------------------------------------------------------------------
    @property
    def config(self) -> TrainConfig:
        return self._config

    def _on_change(self, name: str, value) -> None:
        if self._syncing:
            return
        if name == "target_modules":
            value = list(value)
        try:
            self._config = self._config.update(**{name: value})
            self.message.value = ""
        except ConfigError as exc:  # e.g. no target module selected: keep the last valid value
            self._show_problem(exc)
            self._show(name)
            return
        if name == "model":  # a model passed in belongs to the previous choice
            self.model = self._shape_model = None
            self.seconds_per_step = None
            self._refresh_targets()
        self._refresh()

    def _show_problem(self, exc: Exception) -> None:
        self.message.value = f"<span style='color:#D55E00'>{html.escape(str(exc))}</span>"

    def _show(self, name: str) -> None:
        """Put the config's value back into a control without treating it as a new choice."""
        value = getattr(self._config, name)
        self._syncing = True
        try:
            self.controls[name].value = tuple(value) if isinstance(value, list) else value
        finally:
            self._syncing = False

    def apply_preset(self, name: str) -> None:
        if name not in PRESETS:
            return
        self._config = self._config.update(**preset_values(name))
        for field in self.fields:
            self._show(field)
        self.seconds_per_step = None
        self._refresh()

    # ----- derived numbers ---------------------------------------------------------------------
    def _model_for_shapes(self):
        from .training.planning import weightless_model

        if self._shape_model is None:
            self._shape_model = weightless_model(self._config.model)
        return self._shape_model

    def _layer_names(self) -> list[str]:
        from .models import linear_layer_names

        model = self._model_for_shapes()
        return linear_layer_names(model) if model is not None else []

    def _refresh_targets(self) -> None:
        if "target_modules" in self.controls:
            names = self._layer_names()
            control = self.controls["target_modules"]
            current = [t for t in self._config.target_modules if t in names] or list(names)
            control.options = sorted(set(names) | set(current))
            control.value = tuple(current)

    def derived_numbers(self) -> dict:
        """Trainable parameters, effective batch, steps per epoch, total steps and time estimate."""
        from .training.planning import plan_run

        return dataclasses.asdict(plan_run(self._config, self._model_for_shapes(), self.seconds_per_step))

    def _refresh(self) -> None:
        d = self.derived_numbers()

        def show(value, fmt="{:,}"):
            return "–" if value is None else fmt.format(value)

        memory = self.memory_plan()
        colour = "#009E73" if memory.fits else "#D55E00"
        estimate = ("press <i>measure a warm-up step</i>" if d["estimated_seconds"] is None
                    else f"{d['estimated_seconds'] / 60:.1f} min ({d['seconds_per_step']:.2f} s/step measured)")
        self.derived.value = (
            "<div class='phi3lab-derived'>"
            f"trainable parameters: <b>{show(d['trainable_parameters'])}</b> · "
            f"effective batch: <b>{d['effective_batch_size']}</b> · "
            f"steps per epoch: <b>{show(d['steps_per_epoch'])}</b> · total steps: <b>{show(d['total_steps'])}</b>"
            f"<br>estimated time on this device: <b>{estimate}</b>"
            f"<br>memory: <b style='color:{colour}'>{html.escape(memory.describe())}</b></div>")

    def memory_plan(self):
        """The memory planner's verdict for the current config on this machine (``phi3lab.training.memory``)."""
        from .training.memory import plan_memory

        return plan_memory(self._config)

    def measure_warmup(self) -> float | None:
        """Time one real optimiser step of this config on this device (after one untimed step); a config that
        cannot train shows why instead."""
        from .training.planning import measure_step_seconds

        self.warmup_button.disabled = True
        self.message.value = "measuring a warm-up step…"
        try:
            self.seconds_per_step = measure_step_seconds(self._config, self.model)
            self.message.value = ""
        except Phi3LabError as exc:
            self.seconds_per_step = None
            self._show_problem(exc)
        finally:
            self.warmup_button.disabled = False
        self._refresh()
        return self.seconds_per_step

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def live_loss_plot(title: str | None = None):
    """Moved to ``phi3lab.plots.live_loss_plot`` (with the other figures); kept here for notebooks that import it
    from the widgets."""
    from .plots import live_loss_plot as plot

    return plot(title)
