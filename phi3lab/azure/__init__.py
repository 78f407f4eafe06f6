"""The Azure AI Foundry path: settings and login, prerequisite checks, serverless fine-tuning, scale-out.

Every operation that costs money takes ``confirm=False`` by default and then only shows the
exact request (a dry run through the real SDK and a recording transport).

The names below load on first use, so importing one submodule (``phi3lab.azure.roles`` from the
secret scanner, say) does not pull in the others.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"AzureSettings": "settings", "load_settings": "settings", "mask": "settings",
            "mask_secrets": "settings"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
