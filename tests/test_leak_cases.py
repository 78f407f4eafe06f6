"""Issue 19's leak cases that the pattern table's own samples do not spell out: every kind of ``AzureError`` (not
only HTTP ones) is masked, and a settings line holding nothing but a key is never echoed by a YAML error."""

from __future__ import annotations

import pytest
from azure.core import exceptions as azure

from phi3lab.azure.service import azure_errors
from phi3lab.azure.settings import AzureSettingsError, load_settings
from phi3lab.errors import Phi3LabError

SIG = "Xy7Rz9Tq2Wv4BBn6Mc8Pq1Lk0"
KEY = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
LEAKY = (f"upload to https://stdemo.blob.core.windows.net/c/train.jsonl?sv=2024-05-04&sr=b&sp=w&sig={SIG} failed; "
         f"headers {{'api-key': '{KEY}'}}")
# The SDK's own errors with no HTTP status (a failed connection, a cut-off read, an error of its own).
NOT_HTTP = [azure.AzureError, azure.ServiceRequestError, azure.ServiceRequestTimeoutError, azure.ServiceResponseError,
            azure.ServiceResponseTimeoutError, azure.IncompleteReadError]


@pytest.mark.parametrize("kind", NOT_HTTP, ids=[k.__name__ for k in NOT_HTTP])
def test_every_azure_error_is_masked(kind):
    with pytest.raises(Phi3LabError) as failure:
        with azure_errors("uploading the training data"):
            raise kind(LEAKY)
    message = str(failure.value)
    assert "uploading the training data" in message
    assert SIG not in message and SIG[:8] not in message and KEY not in message and KEY[4:] not in message


def test_a_bare_key_on_a_broken_settings_line_is_not_echoed(tmp_path):
    file = tmp_path / "azure-settings.yaml"
    file.write_text(f"resource_group: rg\n  {KEY}\nworkspace: w: x\n")
    with pytest.raises(AzureSettingsError, match=r"line \d+, column \d+") as failure:
        load_settings(file, environ={})
    assert KEY[:6] not in str(failure.value) and "\n" not in str(failure.value)
