"""Prerequisite checks for serverless fine-tuning: each gives pass, fail or skipped, with a one-line fix.

Without Azure settings every check is skipped, so notebook 00 runs offline. Registering the
``Microsoft.Network`` provider is the one change offered here, behind ``confirm=True``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from ..errors import Phi3LabError
from .dryrun import Reply, dry_run, show_requests
from .finetuning import DEFAULT_AZURE_MODEL, azure_model_name
from .guard import confirmed
from .roles import FINETUNING_ROLES, ROLE_NAMES
from .service import RBAC_HINT, azure_errors
from .settings import SETTINGS_HINT, AzureSettings, load_settings

PROVIDER = "Microsoft.Network"
REGION_TAG = "maas-finetuning-deploy-regions"  # registry model tag listing serverless fine-tuning regions
# Documented regions for serverless fine-tuning (the seeds: Phi-3-mini only in East US 2 hubs).
DOCUMENTED_REGIONS = {"Phi-3-mini-4k-instruct": ("eastus2",), "Phi-3-mini-128k-instruct": ("eastus2",)}
# Documented successors, newest first, proposed when Phi-3 is no longer offered.
SUCCESSORS = ("phi-4-mini-instruct", "phi-3.5-mini-instruct")
NO_SETTINGS = "skipped: no Azure settings"
ICONS = {"pass": "PASS", "fail": "FAIL", "skipped": "SKIP"}


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

    @property
    def ok(self) -> bool:
        return all(c.status == "pass" for c in self.checks)

    def summary(self) -> str:
        return "\n".join(c.line() for c in self.checks)

    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


CHECK_NAMES = ("subscription and resource group reachable", f"{PROVIDER} provider registered",
               "role on the resource group", "project region supports serverless fine-tuning",
               "model offered for serverless fine-tuning in that region")


def run_checks(settings: AzureSettings | None = None, model: str = DEFAULT_AZURE_MODEL, *, credential=None,
               transport=None) -> CheckReport:
    """Run every check in order; after a login failure the rest are skipped (they would fail the same way)."""
    settings = settings or load_settings()
    if settings is None:
        checks = [Check(name, "skipped", NO_SETTINGS) for name in CHECK_NAMES]
        checks[-1].fix = f"to run them, {SETTINGS_HINT}"
        return CheckReport(checks)
    from .auth import AzureLoginError, get_credential

    credential = credential or get_credential()
    context = _Context(settings, azure_model_name(model), credential, transport)
    report = CheckReport()
    for name, check in zip(CHECK_NAMES, context.checks(), strict=True):
        if report.checks and isinstance(getattr(context, "login_error", None), AzureLoginError):
            report.checks.append(Check(name, "skipped", "skipped: sign in first", "see the first failure"))
            continue
        try:
            report.checks.append(check(name))
        except AzureLoginError as exc:
            context.login_error = exc
            report.checks.append(Check(name, "fail", "not signed in", str(exc)))
        except Phi3LabError as exc:
            report.checks.append(Check(name, "fail", str(exc).split(";")[0], _fix_of(exc)))
    return report


def _fix_of(exc: Exception) -> str:
    text = str(exc)
    return text.split("; ", 1)[1] if "; " in text else text


class _Context:
    def __init__(self, settings, azure_model, credential, transport):
        self.settings, self.azure_model, self.credential, self.transport = settings, azure_model, credential, transport
        self.region: str | None = None
        self.login_error = None

    def checks(self):
        return [self.reachable, self.provider, self.role, self.region_supported, self.model_offered]

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

    def role(self, name: str) -> Check:
        from azure.mgmt.authorization import AuthorizationManagementClient

        client = AuthorizationManagementClient(self.credential, self.settings.subscription_id, **self._kwargs())
        scope = f"/subscriptions/{self.settings.subscription_id}/resourceGroups/{self.settings.resource_group}"
        principal = _principal_id(self.credential)
        with azure_errors("listing your role assignments"):
            assignments = list(client.role_assignments.list_for_scope(
                scope, filter=f"atScope() and assignedTo('{principal}')"))
        held = {a.role_definition_id.rsplit("/", 1)[-1].lower() for a in assignments}
        for role in FINETUNING_ROLES:
            if role in held:
                return Check(name, "pass", f"you hold {ROLE_NAMES[role]} on {self.settings.resource_group}")
        wanted = ", ".join(ROLE_NAMES[role] for role in FINETUNING_ROLES)
        return Check(name, "fail", f"none of {wanted} on {self.settings.resource_group}", RBAC_HINT)

    def region_supported(self, name: str) -> Check:
        from .auth import ml_client

        ml = ml_client(self.settings, credential=self.credential, transport=self.transport)
        with azure_errors(f"reading project {self.settings.project}"):
            self.region = normalize_region(ml.workspaces.get(self.settings.project).location)
        documented = DOCUMENTED_REGIONS.get(self.azure_model)
        if documented and self.region not in documented:
            return Check(name, "fail", f"project is in {self.region}; {self.azure_model} serverless fine-tuning is "
                         f"documented for {', '.join(documented)} only",
                         f"create a hub/project in {documented[0]} (portal: AI Foundry → New project → region)")
        where = f"documented for {', '.join(documented)}" if documented else "see the next check for the live list"
        return Check(name, "pass", f"project region {self.region} ({where})")

    def model_offered(self, name: str) -> Check:
        regions = offered_regions(self.azure_model, self.credential, self.transport)
        if self.region and self.region in regions:
            return Check(name, "pass", f"{self.azure_model} is offered in {self.region}")
        here = [s for s in SUCCESSORS if self.region in offered_regions(azure_model_name(s), self.credential,
                                                                        self.transport)]
        listed = ", ".join(regions) or "no region"
        fix = (f"use model={here[0]!r} (offered in {self.region})" if here
               else f"documented successors: {', '.join(SUCCESSORS)}; pick one offered in your region")
        return Check(name, "fail", f"{self.azure_model} is not offered in {self.region} (registry lists {listed})", fix)


def normalize_region(region: str | None) -> str:
    return (region or "").replace(" ", "").lower()


def offered_regions(azure_model: str, credential, transport=None) -> list[str]:
    """Regions from the registry model's ``maas-finetuning-deploy-regions`` tag ([] if absent or unknown)."""
    from azure.core.exceptions import ResourceNotFoundError

    from .auth import registry_client

    registry = registry_client(credential=credential, transport=transport)
    try:
        with azure_errors(f"reading {azure_model} from the model registry"):
            model = registry.models.get(azure_model, label="latest")
    except Phi3LabError as exc:
        if isinstance(exc.__context__, ResourceNotFoundError) or "not found" in str(exc):
            return []
        raise
    return parse_regions((model.tags or {}).get(REGION_TAG))


def parse_regions(value) -> list[str]:
    """The tag holds a JSON list or a comma-separated string, depending on the model's age."""
    if not value:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = value.split(",")
    if isinstance(value, str):
        value = [value]
    return [normalize_region(v) for v in value if str(v).strip()]


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
