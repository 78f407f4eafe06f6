"""Azure built-in role definitions the course names: one place for their IDs.

Role definition IDs are the same in every tenant (public, not secrets), so the secret scanner
leaves them readable and error messages may print them. Sources, checked 2026-12-01:
Azure AI Developer, Owner, Contributor, Reader:
https://learn.microsoft.com/en-us/azure/role-based-access-control/built-in-roles ;
the Foundry roles (renamed in 2026 from "Azure AI ...", ids unchanged):
https://learn.microsoft.com/en-us/azure/foundry/concepts/rbac-foundry and
https://learn.microsoft.com/en-us/azure/foundry/how-to/create-projects (see ``facts.FACTS["foundry_roles"]``).
"""

AZURE_AI_DEVELOPER = "64702f94-c441-49e6-a78b-ef80e0188fee"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
FOUNDRY_USER = "53ca6127-db72-4b80-b1b0-d745d6d5456d"  # formerly Azure AI User
FOUNDRY_PROJECT_MANAGER = "eadc314b-1a2d-4efa-be10-5d325db5065e"  # formerly Azure AI Project Manager
FOUNDRY_ACCOUNT_OWNER = "e47c6f54-e4a2-4754-9501-8e0985b135e1"  # formerly Azure AI Account Owner
FOUNDRY_OWNER = "c883944f-8b7b-4483-af10-35834be79c4a"  # formerly Azure AI Owner

ROLE_NAMES = {AZURE_AI_DEVELOPER: "Azure AI Developer", OWNER: "Owner", CONTRIBUTOR: "Contributor", READER: "Reader",
              FOUNDRY_USER: "Foundry User (formerly Azure AI User)",
              FOUNDRY_PROJECT_MANAGER: "Foundry Project Manager (formerly Azure AI Project Manager)",
              FOUNDRY_ACCOUNT_OWNER: "Foundry Account Owner (formerly Azure AI Account Owner)",
              FOUNDRY_OWNER: "Foundry Owner (formerly Azure AI Owner)"}
# Work in a hub-based project (data, jobs, endpoints): held on the resource group, in the order the check names them.
PROJECT_ROLES = (AZURE_AI_DEVELOPER, OWNER, CONTRIBUTOR)
# Subscribing to and fine-tuning a catalog model: held on the subscription.
SUBSCRIPTION_ROLES = (OWNER, CONTRIBUTOR)
# Foundry-project roles: recognised so the check can say they do not cover a hub-based project.
FOUNDRY_ROLES = (FOUNDRY_USER, FOUNDRY_PROJECT_MANAGER, FOUNDRY_ACCOUNT_OWNER, FOUNDRY_OWNER)
