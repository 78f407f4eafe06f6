"""Prerequisite checks for serverless fine-tuning: each gives pass, fail or skipped, with a one-line fix.

1. the subscription and resource group are reachable with your sign-in;
2. ``Microsoft.Network`` is registered;
3. your roles: Azure AI Developer (or Owner/Contributor) on the resource group for the project's
   work, Owner or Contributor on the subscription to fine-tune catalog models;
4. the project is a hub-based project (not a hub, a plain workspace or a Foundry project);
5. a base model is offered for serverless fine-tuning in the project's region: Phi-3-mini where
   the registry still offers it, otherwise its documented successor. ``report.model_choice`` is
   that model, pinned to its version; notebook 03 submits exactly it.

Without Azure settings every check is skipped, so notebook 00 runs offline. Registering the
``Microsoft.Network`` provider is the one change offered here, behind ``confirm=True``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from ..errors import Phi3LabError
from .catalog import ModelChoice, choose_base_model
from .dryrun import Reply, dry_run, show_requests
from .guard import confirmed
from .projects import Project, find_project
from .roles import FOUNDRY_ROLES, PROJECT_ROLES, ROLE_NAMES, SUBSCRIPTION_ROLES
from .service import azure_errors
from .settings import SETTINGS_HINT, AzureSettings, load_settings

PROVIDER = "Microsoft.Network"
NO_SETTINGS = "skipped: no Azure settings"
ICONS = {"pass": "PASS", "fail": "FAIL", "skipped": "SKIP"}
GRANT = "portal → {scope} → Access control (IAM) → Add role assignment → {role}"


@dataclass
class Check:
    name: str
    status: str  # "pass" | "fail" | "skipped"
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{ICONS[self.status]}] {self.name}: {self.detail}"
        return text + (f"\n       fix: {self.fix}" if self.fix else "")


@dataclass
class CheckReport:
    checks: list[Check] = field(default_factory=list)
    model_choice: ModelChoice | None = None  # check 5's result: the base model notebook 03 submits

    @property
    def ok(self) -> bool:
        return all(c.status == "pass" for c in self.checks)

    def summary(self) -> str:
        return "\n".join(c.line() for c in self.checks)

    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


CHECK_NAMES = ("subscription and resource group reachable", f"{PROVIDER} provider registered",
               "your roles", "project type", "base model offered for serverless fine-tuning")


def run_checks(settings: AzureSettings | None = None, model: str | None = None, *, credential=None,
               transport=None) -> CheckReport:
    """Run every check in order; after a login failure the rest are skipped (they would fail the same way).

    ``model``: the catalog model to prefer (default: the course config's, the stand-in standing for Phi-3-mini).
    """
    settings = settings or load_settings()
    if settings is None:
        checks = [Check(name, "skipped", NO_SETTINGS) for name in CHECK_NAMES]
        checks[-1].fix = f"to run them, {SETTINGS_HINT}"
        return CheckReport(checks)
    from .auth import AzureLoginError, get_credential

    context = _Context(settings, _preferred(model), credential or get_credential(), transport)
    report = CheckReport()
    for name, check in zip(CHECK_NAMES, context.checks(), strict=True):
        if context.login_error is not None:
            report.checks.append(Check(name, "skipped", "skipped: sign in first", "see the first failure"))
            continue
        try:
            report.checks.append(check(name))
        except AzureLoginError as exc:
            context.login_error = exc
            report.checks.append(Check(name, "fail", "not signed in", str(exc)))
        except Phi3LabError as exc:
            report.checks.append(Check(name, "fail", *_detail_and_fix(exc)))
    report.model_choice = context.choice
    return report


def _preferred(model: str | None) -> str:
    from ..config import default_config
    from .finetuning import azure_model_name

    return azure_model_name(model or default_config().model)


def _detail_and_fix(exc: Exception) -> tuple[str, str]:
    """A message's problem and its fix: split at ". Fix: " or, for the service's errors, at the first "; "."""
    text = str(exc)
    for marker in (". Fix: ", "; "):
        if marker in text:
            detail, fix = text.split(marker, 1)
            return detail, fix
    return text, ""


class _Context:
    def __init__(self, settings: AzureSettings, preferred: str, credential, transport):
        self.settings, self.preferred, self.credential, self.transport = settings, preferred, credential, transport
        self.project: Project | None = None
        self.choice: ModelChoice | None = None
        self.login_error = None

    def checks(self):
        return [self.reachable, self.provider, self.roles, self.project_type, self.model_offered]

    def _kwargs(self) -> dict:
        return {"transport": self.transport} if self.transport is not None else {}

    def resources(self):
        from azure.mgmt.resource.resources import ResourceManagementClient

        return ResourceManagementClient(self.credential, self.settings.subscription_id, **self._kwargs())

    def reachable(self, name: str) -> Check:
        with azure_errors(f"resource group {self.settings.resource_group}"):
            group = self.resources().resource_groups.get(self.settings.resource_group)
        return Check(name, "pass", f"resource group {group.name} in {group.location}")

    def provider(self, name: str) -> Check:
        state = provider_state(self.resources())
        if state == "Registered":
            return Check(name, "pass", f"{PROVIDER} is Registered")
        return Check(name, "fail", f"{PROVIDER} is {state}",
                     "register_provider(confirm=True), or portal: Subscriptions → your subscription → "
                     "Resource providers → Microsoft.Network → Register")

    def roles(self, name: str) -> Check:
        held = self._held_roles()
        group, subscription = held["group"], held["subscription"]
        missing = []
        if not group & set(PROJECT_ROLES):
            missing.append((" or ".join(ROLE_NAMES[r] for r in PROJECT_ROLES), f"resource group "
                            f"{self.settings.resource_group}", "an Owner of the resource group or the subscription",
                            "resource group"))
        if not subscription & set(SUBSCRIPTION_ROLES):
            missing.append(("Owner or Contributor", "the subscription (needed to fine-tune catalog models)",
                            "an Owner of the subscription", "Subscriptions → your subscription"))
        foundry = sorted(ROLE_NAMES[r] for r in (group | subscription) & set(FOUNDRY_ROLES))
        note = (f"; you hold {', '.join(foundry)}, which covers Foundry projects, not hub-based projects"
                if foundry else "")
        if not missing:
            names = sorted(ROLE_NAMES[r] for r in (group | subscription) & set(PROJECT_ROLES + SUBSCRIPTION_ROLES))
            return Check(name, "pass", f"you hold {', '.join(names)}{note}")
        detail = "; ".join(f"missing {role} on {scope}" for role, scope, _, _ in missing) + note
        fix = "; ".join(f"ask {who} to grant it ({GRANT.format(scope=where, role=role)})"
                        for role, _, who, where in missing)
        return Check(name, "fail", detail, fix)

    def _held_roles(self) -> dict[str, set[str]]:
        """Role ids assigned to you on the resource group (directly or inherited) and on the subscription or above."""
        from azure.mgmt.authorization import AuthorizationManagementClient

        client = AuthorizationManagementClient(self.credential, self.settings.subscription_id, **self._kwargs())
        scope = f"/subscriptions/{self.settings.subscription_id}/resourceGroups/{self.settings.resource_group}"
        with azure_errors("listing your role assignments"):
            # atScope() returns the assignments at this scope and those inherited from above it.
            assignments = list(client.role_assignments.list_for_scope(
                scope, filter=f"atScope() and assignedTo('{_principal_id(self.credential)}')"))
        held = {"group": set(), "subscription": set()}
        for assignment in assignments:
            role = assignment.role_definition_id.rsplit("/", 1)[-1].lower()
            held["group"].add(role)
            if not (assignment.scope or scope).lower().startswith(scope.lower()):
                held["subscription"].add(role)  # assigned on the subscription or a management group above it
        return held

    def project_type(self, name: str) -> Check:
        from .auth import ml_client

        ml = ml_client(self.settings, credential=self.credential, **self._kwargs())
        self.project = find_project(ml, self.resources(), self.settings)
        if self.project.usable:
            return Check(name, "pass", self.project.describe())
        return Check(name, "fail", self.project.describe(), self.project.problem())

    def model_offered(self, name: str) -> Check:
        if self.project is None or not self.project.usable:
            return Check(name, "skipped", "skipped: needs a hub-based project (check 4)", "see check 4")
        from .auth import registry_client

        registry = registry_client(credential=self.credential, **self._kwargs())
        self.choice = choose_base_model(registry, self.project.region, self.preferred)
        return Check(name, "pass", self.choice.summary())


def provider_state(resources) -> str:
    with azure_errors(f"reading the {PROVIDER} provider"):
        return resources.providers.get(PROVIDER).registration_state


def register_provider(settings: AzureSettings | None = None, *, confirm: bool = False, credential=None,
                      transport=None) -> str:
    """Register ``Microsoft.Network`` on the subscription (free, but a change): dry run unless confirm=True."""
    from azure.mgmt.resource.resources import ResourceManagementClient

    settings = settings or load_settings()
    if not confirmed(confirm, settings):
        run = dry_run([("POST", rf"/providers/{PROVIDER}/register", _registering)], settings)
        run.resource_client().providers.register(PROVIDER)
        return "DRY RUN: nothing was sent. Run with confirm=True to register.\n" + show_requests(run.requests)
    from .auth import get_credential

    kwargs = {"transport": transport} if transport is not None else {}
    client = ResourceManagementClient(credential or get_credential(), settings.subscription_id, **kwargs)
    with azure_errors(f"registering {PROVIDER}"):
        state = client.providers.register(PROVIDER).registration_state
    return f"{PROVIDER}: {state} (registration takes a few minutes; run the checks again)"


def _registering(request, match) -> Reply:
    return Reply(200, {"id": request.path.rsplit("/register", 1)[0], "namespace": PROVIDER,
                       "registrationState": "Registering"})


def _principal_id(credential) -> str:
    """The signed-in principal's object id (``oid`` claim of its ARM token; read, not verified)."""
    token = credential.get_token("https://management.azure.com/.default").token
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims["oid"]
    except (IndexError, ValueError, KeyError):
        raise Phi3LabError("could not read your account's object id from the Azure token; sign in again with "
                           "`az login`") from None
