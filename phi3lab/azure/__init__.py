"""The Azure AI Foundry path: settings and login, prerequisite checks, serverless fine-tuning, scale-out.

Every operation that costs money takes ``confirm=False`` by default and then only shows the
exact request (a dry run through the real SDK and a recording transport).
"""

from .settings import AzureSettings, load_settings, mask, mask_secrets

__all__ = ["AzureSettings", "load_settings", "mask", "mask_secrets"]
