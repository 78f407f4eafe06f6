"""Azure built-in role definitions the course names: one place for their IDs.

Role definition IDs are the same in every tenant (public, not secrets), so the secret scanner
leaves them readable and error messages may print them.
"""

AZURE_AI_DEVELOPER = "64702f94-c441-49e6-a78b-ef80e0188fee"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"

ROLE_NAMES = {AZURE_AI_DEVELOPER: "Azure AI Developer", OWNER: "Owner", CONTRIBUTOR: "Contributor", READER: "Reader"}
# Roles that may run serverless fine-tuning on the resource group, in the order the check names them.
FINETUNING_ROLES = (AZURE_AI_DEVELOPER, OWNER, CONTRIBUTOR)
