"""JSON schemas the course writes from Azure's public REST spec, and validation against them."""

from __future__ import annotations

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


def validate_job_body(body: dict) -> dict:
    """Raise SchemaError naming the field when ``body`` is not a valid FineTuning job PUT body.

    Enums are checked exactly as the spec spells them (``ChatCompletion``, not ``chatCompletion``).
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("finetuning_job"))
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message}" for e in errors[:5])
        raise SchemaError(f"the fine-tuning job body does not match the REST spec: {problems}")
    return body
