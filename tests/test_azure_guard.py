"""The money guard: only ``confirm=True`` acts; False/None is a dry run; any other value is a TypeError, sending nothing."""

from __future__ import annotations

import numpy as np
import pytest
from azure_fakes import SETTINGS
from test_azure_deployment import FakeFoundry

from phi3lab.azure.cleanup import cleanup_azure, delete_course_resource_group
from phi3lab.azure.compute import create_gpu_cluster
from phi3lab.azure.deployment import deploy_serverless
from phi3lab.azure.finetuning import submit_finetuning
from phi3lab.azure.guard import ConfirmError, confirmed, strict_confirm
from phi3lab.azure.prerequisites import register_provider
from phi3lab.azure.scaleout import submit_training_job
from phi3lab.azure.settings import AzureSettingsError
from phi3lab.cleanup import local_cleanup
from phi3lab.config import TrainConfig


def _fake_kwargs(fake):
    return {"credential": fake.credential, "transport": fake.transport}


# Every call that spends money or removes something, called the way a learner would.
BILLABLE = {
    "submit fine-tuning": lambda fake, tmp, confirm: submit_finetuning(
        TrainConfig(), SETTINGS, confirm=confirm, **_fake_kwargs(fake)),
    "deploy serverless endpoint": lambda fake, tmp, confirm: deploy_serverless(
        settings=SETTINGS, confirm=confirm, **_fake_kwargs(fake)),
    "register provider": lambda fake, tmp, confirm: register_provider(SETTINGS, confirm=confirm, **_fake_kwargs(fake)),
    "create a GPU compute cluster": lambda fake, tmp, confirm: create_gpu_cluster(
        settings=SETTINGS, confirm=confirm, **_fake_kwargs(fake)),
    "scale-out training job": lambda fake, tmp, confirm: submit_training_job(
        TrainConfig(), "train-gpu", settings=SETTINGS, confirm=confirm, config_path=tmp / "job.yaml",
        **_fake_kwargs(fake)),
    "Azure cleanup (cancel, delete, archive)": lambda fake, tmp, confirm: cleanup_azure(
        SETTINGS, confirm=confirm, **_fake_kwargs(fake)),
    "delete the course's resource group": lambda fake, tmp, confirm: delete_course_resource_group(
        SETTINGS, confirm=confirm, **_fake_kwargs(fake)),
    "local cleanup (remove files, stop servers)": lambda fake, tmp, confirm: local_cleanup(confirm=confirm),
}
def _with_cluster(fake):
    """A GPU cluster for the training job to run on (cluster creation makes its own, phi3lab-gpu)."""
    fake.add_cluster("train-gpu", "Standard_NC24ads_A100_v4")
    return fake


# Truthy and falsy values that are not a plain bool: none of them may start (or silently skip) a billed action.
NOT_A_BOOL = ["yes", "no", "True", "False", "", 1, 0, 1.0, [0], [], {"confirm": True}, np.True_, np.False_, object()]


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A runs root with one checkpoint, so local cleanup has something it could remove."""
    checkpoint = tmp_path / "runs" / "lora" / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    (tmp_path / "runs" / "lora" / "config.yaml").write_text("run_name: lora\n")
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))
    return checkpoint


@pytest.mark.parametrize("value", NOT_A_BOOL, ids=[repr(v)[:20] for v in NOT_A_BOOL])
@pytest.mark.parametrize("action", BILLABLE, ids=list(BILLABLE))
def test_anything_but_a_bool_is_refused_before_anything_is_sent(action, value, runs, tmp_path):
    fake = _with_cluster(FakeFoundry())
    with pytest.raises(TypeError, match=r"confirm must be True .* or False"):
        BILLABLE[action](fake, tmp_path, value)
    assert fake.transport.requests == []
    assert runs.exists()


@pytest.mark.parametrize("value", [False, None])
@pytest.mark.parametrize("action", BILLABLE, ids=list(BILLABLE))
def test_false_or_none_is_a_dry_run(action, value, runs, tmp_path):
    fake = _with_cluster(FakeFoundry())
    result = BILLABLE[action](fake, tmp_path, value)
    assert "DRY RUN" in str(result) or getattr(result, "dry_run", False)
    assert all(r.method == "GET" for r in fake.transport.requests)  # at most free reads (cleanup lists)
    assert runs.exists()


def test_the_error_is_a_phi3lab_error_naming_the_parameter_without_echoing_secrets():
    with pytest.raises(ConfirmError, match="delete must be True") as failure:
        strict_confirm("api_key=a1b2c3d4e5f6a7b8c9d0", name="delete")
    assert "a1b2c3d4" not in str(failure.value)


def test_true_needs_settings():
    assert confirmed(False, None) is False and confirmed(True, SETTINGS) is True
    with pytest.raises(AzureSettingsError, match="confirm=True needs Azure settings"):
        confirmed(True, None)
