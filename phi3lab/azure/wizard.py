"""The portal's Fine-tune wizard, field by field, next to what the SDK sends for the same configuration.

The wizard asks for a learning-rate *multiplier* (the pretraining learning rate is multiplied by
it) while the SDK sends the absolute learning rate, so the course's ``2e-4`` typed into the
wizard would be a near-zero multiplier. Microsoft does not publish the pretraining rate, so no
exact conversion exists: the table recommends the documented range instead. Field labels and
ranges come from ``facts.WIZARD`` (source and date in ``facts.FACTS["wizard_fields"]``).
"""

from __future__ import annotations

from ..config import TrainConfig
from .facts import WIZARD, WIZARD_LR_RECOMMENDED
from .finetuning import hyperparameters


def _portal_value(name: str, value) -> str:
    """What to type into the wizard for this config value."""
    low, high = WIZARD_LR_RECOMMENDED
    if name == "learning_rate":
        return (f"{(low + high) / 2:g} to start (documented range {low:g}-{high:g}), or Default; not {value:g}, "
                f"which the portal would read as a multiplier")
    if name == "batch_size" and not 1 <= value <= 32:
        return f"{min(max(value, 1), 32)} (the wizard accepts 1-32; your config has {value})"
    if name == "epochs" and not 1 <= value <= 10:
        return f"{min(max(value, 1), 10)} (the wizard accepts 1-10; your config has {value})"
    return str(value)


def wizard_rows(config: TrainConfig) -> list[dict[str, str]]:
    """One row per wizard field: its label and range, what to type in the portal, what the SDK sends."""
    sent = hyperparameters(config)
    return [{"wizard field": label, "portal range": allowed,
             "type in the portal": _portal_value(name, getattr(config, name)),
             "the SDK sends (absolute)": f"{key} = {sent[key]!r}"}
            for name, (label, allowed, key) in WIZARD.items()]


def wizard_table(config: TrainConfig):
    """``wizard_rows`` as a pandas DataFrame, for a notebook."""
    import pandas as pd

    return pd.DataFrame(wizard_rows(config))
