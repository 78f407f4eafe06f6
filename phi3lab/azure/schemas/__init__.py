"""JSON schemas the course writes from Azure's public REST spec, and validation against them."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from ...errors import Phi3LabError

HERE = Path(__file__).parent


class SchemaError(Phi3LabError):
    """A request body does not match the REST spec."""


@cache
def load_schema(name: str = "finetuning_job") -> dict:
    return json.loads((HERE / f"{name}.schema.json").read_text(encoding="utf-8"))


def spec_task_type(task: str) -> str:
    """The spec's spelling of a task type.

    azure-ai-ml 1.35.2 lowercases the first letter on purpose (``chatCompletion``) while the
    spec's enum says ``ChatCompletion``. The service parses the enum case-insensitively and the
    SDK's own samples submit it that way, so the course sends what the SDK sends and validates
    the spec's spelling.
    """
    return task[:1].upper() + task[1:]


def validate_job_body(body: dict, normalize_task: bool = True) -> dict:
    """Raise SchemaError naming the field when ``body`` is not a valid FineTuning job PUT body."""
    import jsonschema

    checked = copy.deepcopy(body)
    details = checked.get("properties", {}).get("fineTuningDetails", {})
    if normalize_task and isinstance(details.get("taskType"), str):
        details["taskType"] = spec_task_type(details["taskType"])
    validator = jsonschema.Draft202012Validator(load_schema("finetuning_job"))
    errors = sorted(validator.iter_errors(checked), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message}" for e in errors[:5])
        raise SchemaError(f"the fine-tuning job body does not match the REST spec: {problems}")
    return body
