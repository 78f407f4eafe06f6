"""Facts as data (each with a source and a date), the wizard's fields next to the SDK's, and the Azure CLI commands."""

from __future__ import annotations

import re

import pytest

from phi3lab.azure import facts
from phi3lab.azure.catalog import REGION_TAG
from phi3lab.azure.roles import FOUNDRY_ROLES, ROLE_NAMES
from phi3lab.azure.wizard import wizard_rows
from phi3lab.cli import main
from phi3lab.config import TrainConfig
from phi3lab.secrets import mask_secrets


@pytest.mark.parametrize("key", sorted(facts.FACTS))
def test_every_fact_carries_a_source_url_and_the_date_it_was_checked(key):
    fact = facts.FACTS[key]
    assert re.match(r"https://[\w.-]+/\S+$", fact.source), fact.source
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", fact.checked) and fact.checked <= "2026-12-01"
    assert fact.source_date is None or fact.source_date <= fact.checked
    cited = fact.cited()
    assert fact.source in cited and f"checked {fact.checked}" in cited


def test_the_tables_agree_with_each_other():
    for model, (date, successor) in facts.RETIRED.items():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", date)
        assert successor in facts.FINETUNING_REGIONS, f"{model}'s successor has no documented fine-tuning regions"
    assert facts.successors("Phi-3-mini-4k-instruct") == ["Phi-4-mini-instruct"]
    assert facts.successors("Phi-4-mini-instruct") == []
    assert REGION_TAG in facts.FACTS["finetuning_regions"].statement


def test_the_foundry_roles_are_public_ids_the_secret_masker_leaves_readable():
    for role in FOUNDRY_ROLES:
        assert "formerly Azure AI" in ROLE_NAMES[role] and mask_secrets(f"role {role}") == f"role {role}"


def test_show_facts_prints_each_fact_with_its_source(capsys):
    facts.show_facts("phi3_retired", "content_filter")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and facts.LIFECYCLE_PAGE in out[0] and "Content Safety pricing" in out[1]


def test_the_wizard_table_warns_against_typing_the_absolute_learning_rate():
    rows = {row["wizard field"]: row for row in wizard_rows(TrainConfig(learning_rate=2e-4, batch_size=8, epochs=3))}
    assert set(rows) == {"Batch size", "Learning rate multiplier", "Number of epochs"}
    multiplier = rows["Learning rate multiplier"]
    assert multiplier["the SDK sends (absolute)"] == "learning_rate = '0.0002'"
    assert multiplier["type in the portal"].startswith("0.11 to start") and "not 0.0002" in multiplier["type in the portal"]
    assert rows["Batch size"]["type in the portal"] == "8" and rows["Number of epochs"]["type in the portal"] == "3"


def test_out_of_range_values_are_clamped_with_a_note():
    rows = {row["wizard field"]: row for row in wizard_rows(TrainConfig(batch_size=64, epochs=12))}
    assert rows["Batch size"]["type in the portal"].startswith("32 (the wizard accepts 1-32")
    assert rows["Number of epochs"]["type in the portal"].startswith("10 (the wizard accepts 1-10")


@pytest.fixture
def no_settings(monkeypatch):
    for module in ("cleanup", "prerequisites"):
        monkeypatch.setattr(f"phi3lab.azure.{module}.load_settings", lambda: None)


def test_cli_cleanup_and_resource_group_steps_are_dry_runs_without_confirm(no_settings, capsys):
    assert main(["azure", "cleanup"]) == 0
    assert "DRY RUN" in capsys.readouterr().out
    assert main(["azure", "delete-resource-group"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DRY RUN") and "DELETE https://management.azure.com/" in out


def test_cli_check_without_settings_skips_every_check(no_settings, capsys):
    assert main(["azure", "check"]) == 0
    assert capsys.readouterr().out.count("[SKIP]") == 5
