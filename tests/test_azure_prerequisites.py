"""Prerequisite checks and provider registration at the HTTP boundary (managed compute: test_azure_scaleout)."""

import pytest
from azure_fakes import PRINCIPAL, SETTINGS, SUBSCRIPTION, FakeAzure, error

from phi3lab.azure.catalog import parse_regions
from phi3lab.azure.facts import LIFECYCLE_PAGE
from phi3lab.azure.prerequisites import NO_SETTINGS, register_provider, run_checks
from phi3lab.azure.roles import AZURE_AI_DEVELOPER, CONTRIBUTOR, FOUNDRY_USER, OWNER

PHI4 = ["eastus2", "eastus", "northcentralus", "southcentralus", "westus", "westus3"]


def checks(fake, model="phi-3-mini-4k-instruct"):
    return run_checks(SETTINGS, model, credential=fake.credential, transport=fake.transport)


def test_without_settings_every_check_is_skipped(monkeypatch):
    monkeypatch.setattr("phi3lab.azure.prerequisites.load_settings", lambda: None)
    report = run_checks()
    assert len(report.checks) == 5 and {c.status for c in report.checks} == {"skipped"}
    assert all(c.detail == NO_SETTINGS for c in report.checks) and report.model_choice is None


def test_all_checks_pass_and_their_requests_are_right():
    fake = FakeAzure(provider_state="Registered")
    report = checks(fake)
    assert [c.status for c in report.checks] == ["pass"] * 5, report.summary()
    t = fake.transport
    [provider] = t.matching("GET", r"/providers/Microsoft\.Network\?")
    assert provider.path == f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network"
    assert provider.api_version == "2025-04-01"
    [roles] = t.matching("GET", r"roleAssignments")
    assert roles.path == (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-phi3lab/providers/"
                          "Microsoft.Authorization/roleAssignments")
    assert roles.query["$filter"] == f"atScope() and assignedTo('{PRINCIPAL}')"
    assert roles.api_version == "2022-04-01"
    assert "Azure AI Developer" in report.checks[2].detail and "Contributor" in report.checks[2].detail
    assert "hub-based project in eastus2" in report.checks[3].detail
    # check 5's result is the model notebook 03 submits: pinned to the version the registry reported
    choice = report.model_choice
    assert (choice.azure_model, choice.version) == ("Phi-3-mini-4k-instruct", "14")
    assert choice.model_id == "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/14"


def test_unregistered_provider_fails_with_the_fix_and_registration_posts():
    fake = FakeAzure(provider_state="NotRegistered")
    provider = checks(fake).checks[1]
    assert provider.status == "fail" and "register_provider(confirm=True)" in provider.fix
    text = register_provider(SETTINGS, confirm=True, credential=fake.credential, transport=fake.transport)
    [post] = fake.transport.matching("POST", r"/register")
    assert post.path == f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/register"
    assert post.api_version == "2025-04-01" and "Registering" in text


def test_registration_dry_run_sends_nothing_and_masks_the_subscription():
    text = register_provider(SETTINGS)
    assert text.startswith("DRY RUN") and "POST https://management.azure.com/subscriptions/1111…/providers/" \
        "Microsoft.Network/register" in text and SUBSCRIPTION not in text


def test_owner_on_the_group_and_contributor_on_the_subscription_pass():
    assert checks(FakeAzure(roles=(OWNER,), subscription_roles=(CONTRIBUTOR,))).checks[2].status == "pass"
    # a subscription Owner inherits everything it needs on the group
    assert checks(FakeAzure(roles=(), subscription_roles=(OWNER,))).checks[2].status == "pass"


def test_a_missing_role_names_the_role_the_scope_and_who_can_grant_it():
    role = checks(FakeAzure(roles=(), subscription_roles=())).checks[2]
    assert role.status == "fail"
    assert "missing Azure AI Developer or Owner or Contributor on resource group rg-phi3lab" in role.detail
    assert "missing Owner or Contributor on the subscription" in role.detail
    assert "an Owner of the subscription" in role.fix and "Access control (IAM)" in role.fix
    only_group = checks(FakeAzure(roles=(AZURE_AI_DEVELOPER,), subscription_roles=())).checks[2]
    assert only_group.status == "fail" and only_group.detail == ("missing Owner or Contributor on the subscription "
                                                                 "(needed to fine-tune catalog models)")


def test_the_newer_foundry_roles_are_recognised_and_explained():
    role = checks(FakeAzure(roles=(FOUNDRY_USER,), subscription_roles=())).checks[2]
    assert role.status == "fail"
    assert "Foundry User (formerly Azure AI User)" in role.detail and "not hub-based projects" in role.detail


def test_a_foundry_project_instead_of_a_hub_is_named_with_how_to_create_one():
    fake = FakeAzure(provider_state="Registered", workspace_kind=None)
    report = checks(fake)
    project, model = report.checks[3], report.checks[4]
    assert project.status == "fail" and "proj-phi3lab is a Foundry project" in project.detail
    assert "hub-based project" in project.fix and "az ml workspace create --kind project" in project.fix
    assert model.status == "skipped" and report.model_choice is None
    # it looked the name up among the group's Foundry resources, with the real resource manager client
    [lookup] = fake.transport.matching("GET", r"/accounts/foundry-res/projects/proj-phi3lab\?")
    assert lookup.api_version == "2025-04-01-preview"


@pytest.mark.parametrize(("kind", "says"), [("Hub", "is a hub, not a project"),
                                            ("Default", "plain Azure Machine Learning workspace")])
def test_a_hub_or_a_plain_workspace_is_not_a_project(kind, says):
    project = checks(FakeAzure(workspace_kind=kind)).checks[3]
    assert project.status == "fail" and says in project.detail and "hub-based project" in project.fix


def test_a_missing_project_says_so_without_a_traceback():
    fake = FakeAzure(workspace_kind=None)
    fake.transport.route("GET", r"/projects/", lambda r, m: error(404, "ResourceNotFound", "not found"))
    project = checks(fake).checks[3]
    assert project.status == "fail" and "no project named proj-phi3lab" in project.detail


def test_a_retired_model_falls_back_to_its_documented_successor():
    fake = FakeAzure(provider_state="Registered", model_regions={"Phi-4-mini-instruct": PHI4})
    report = checks(fake)
    offered = report.checks[4]
    assert offered.status == "pass", report.summary()
    assert "Phi-4-mini-instruct version 14" in offered.detail
    assert "Phi-3-mini-4k-instruct was retired on 2025-08-30" in offered.detail and LIFECYCLE_PAGE in offered.detail
    assert report.model_choice.azure_model == "Phi-4-mini-instruct"


def test_a_model_not_offered_in_the_region_is_one_clear_failure():
    fake = FakeAzure(provider_state="Registered", region="westeurope", model_regions={"Phi-4-mini-instruct": PHI4})
    offered = checks(fake).checks[4]
    assert offered.status == "fail" and "no base model for serverless fine-tuning in westeurope" in offered.detail
    assert "Phi-3-mini-4k-instruct was retired on 2025-08-30" in offered.detail
    assert "Phi-4-mini-instruct is not offered for serverless fine-tuning in westeurope" in offered.detail
    assert "hub-based project in a region" in offered.fix and "managed-compute" in offered.fix


def test_region_tag_formats():
    assert parse_regions('["East US 2", "swedencentral"]') == ("eastus2", "swedencentral")
    assert parse_regions("eastus2,westus3") == ("eastus2", "westus3") and parse_regions(None) == ()


def test_401_fails_the_first_check_with_a_login_hint_and_skips_the_rest():
    fake = FakeAzure()
    fake.transport.route("*", r"management\.azure\.com", lambda r, m: error(401, "InvalidAuthenticationToken",
                                                                              "The access token is invalid"))
    report = checks(fake)
    assert report.checks[0].status == "fail" and "az login" in report.checks[0].fix
    assert [c.status for c in report.checks[1:]] == ["skipped"] * 4


def test_403_on_roles_gives_the_rbac_hint():
    fake = FakeAzure(provider_state="Registered")
    fake.transport.route("GET", r"roleAssignments", lambda r, m: error(403, "AuthorizationFailed", "denied"))
    role = checks(fake).checks[2]
    assert role.status == "fail" and "Azure AI Developer" in role.fix and "HTTP 403" in role.detail
