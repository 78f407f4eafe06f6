"""What kind of project the settings name: a hub-based project, a hub, a plain workspace or a Foundry project.

Serverless fine-tuning needs a hub-based project (an Azure ML workspace of kind ``project``
under a hub). The current portal creates Foundry projects by default: those are children of a
Cognitive Services account (``Microsoft.CognitiveServices/accounts/projects``), so the Azure ML
API answers "not found" for them. ``find_project`` tells the cases apart, so the learner reads
which one they have and how to create the right one instead of a bare 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Phi3LabError
from .catalog import normalize_region
from .facts import HUB_PROJECT_PAGE, SERVERLESS_REGIONS_PAGE
from .service import AzureNotFoundError, azure_errors

ACCOUNT_TYPE = "Microsoft.CognitiveServices/accounts"
ACCOUNT_API_VERSION = "2025-04-01-preview"  # the version the Foundry create-projects docs use for projects
CREATE_HUB_PROJECT = (f"create a hub-based project (Foundry classic portal: + New project, 'hub based', or "
                      f"`az ml workspace create --kind project --hub-id <hub resource id> -g <resource group> "
                      f"-n <name>`; {HUB_PROJECT_PAGE}) and put its name in your settings as project")


class ProjectTypeError(Phi3LabError):
    """The settings name something that cannot run serverless fine-tuning, or nothing at all."""


@dataclass(frozen=True)
class Project:
    """The project the settings name: ``kind`` is hub-project, hub, workspace, foundry-project or missing."""

    name: str
    kind: str
    region: str | None = None
    workspace_id: str | None = None

    @property
    def usable(self) -> bool:
        return self.kind == "hub-project"

    def describe(self) -> str:
        return {
            "hub-project": f"{self.name} is a hub-based project in {self.region}",
            "hub": f"{self.name} is a hub, not a project",
            "workspace": f"{self.name} is a plain Azure Machine Learning workspace, not a hub-based project",
            "foundry-project": f"{self.name} is a Foundry project (a Cognitive Services account's project)",
            "missing": f"no project named {self.name} in this resource group",
        }[self.kind]

    def problem(self) -> str:
        """Why serverless fine-tuning cannot run here and how to fix it (empty for a hub-based project)."""
        why = {"hub": "serverless fine-tuning runs in a project under the hub; put the project's name in your "
                      "settings, or ",
               "workspace": "serverless fine-tuning of catalog models needs a hub-based project; ",
               "foundry-project": f"serverless fine-tuning needs a hub-based project, and Foundry projects "
                                  f"aren't supported for it ({SERVERLESS_REGIONS_PAGE}); ",
               "missing": "check the name and resource group in your settings, or "}
        return "" if self.usable else why[self.kind] + CREATE_HUB_PROJECT

    def require_usable(self) -> Project:
        if not self.usable:
            raise ProjectTypeError(f"{self.describe()}: {self.problem()}")
        return self


def find_project(ml, resources, settings) -> Project:
    """Read the workspace; when Azure ML does not know the name, look for a Foundry project of that name."""
    from azure.ai.ml.entities import Hub
    from azure.ai.ml.entities import Project as HubProject

    try:
        with azure_errors(f"reading project {settings.project}"):
            workspace = ml.workspaces.get(settings.project)
    except AzureNotFoundError:
        return Project(settings.project, "foundry-project" if _is_foundry_project(resources, settings)
                       else "missing")
    kind = "hub-project" if isinstance(workspace, HubProject) else "hub" if isinstance(workspace, Hub) else "workspace"
    # The SDK keeps the workspace GUID in a private attribute (pinned azure-ai-ml 1.35.2); endpoints need it.
    return Project(settings.project, kind, normalize_region(workspace.location), getattr(workspace, "_workspace_id", None))


def _is_foundry_project(resources, settings) -> bool:
    """A Cognitive Services account in the group named like the project, or with a child project of that name."""
    with azure_errors(f"listing Foundry resources in {settings.resource_group}"):
        accounts = list(resources.resources.list_by_resource_group(
            settings.resource_group, filter=f"resourceType eq '{ACCOUNT_TYPE}'"))
    for account in accounts:
        if account.name.lower() == settings.project.lower():
            return True
        try:
            with azure_errors(f"reading Foundry project {settings.project} of {account.name}"):
                resources.resources.get_by_id(f"{account.id}/projects/{settings.project}",
                                              api_version=ACCOUNT_API_VERSION)
            return True
        except AzureNotFoundError:
            continue
    return False
