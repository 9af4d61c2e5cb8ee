"""Checking an answer against `schema=`, and the repair turn that asks the model again.

A 200 OK is not a success until its content is what the caller asked for: JSON (bare or in
a ```json fence, as models like to write it) that validates against the pydantic model.
An answer that fails gets a bounded number of repair turns that quote the errors, so a
model that slipped once can correct itself in the same call.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_MAX_ERRORS = 5


def json_text(content: str) -> str:
    """The JSON of an answer: its first fenced block if it has one, else all of it."""
    match = _FENCE.search(content)
    return (match.group(1) if match else content).strip()


def describe(error: ValidationError) -> list[str]:
    """The field errors, `path: message`, at most five (and how many more)."""
    out = []
    for item in error.errors(include_url=False)[:_MAX_ERRORS]:
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        out.append(f"{where}: {item['msg']}")
    if error.error_count() > _MAX_ERRORS:
        out.append(f"and {error.error_count() - _MAX_ERRORS} more")
    return out


def check(content: str, schema: type[BaseModel]) -> tuple[BaseModel | None, list[str]]:
    """The validated instance, or None and the errors that say why not."""
    try:
        return schema.model_validate_json(json_text(content)), []
    except ValidationError as e:
        return None, describe(e)


def _schema_json(schema: type[BaseModel]) -> str:
    return json.dumps(schema.model_json_schema(), separators=(",", ":"))


def instruction(schema: type[BaseModel]) -> dict[str, Any]:
    """The system message a call with `schema=` ends its prompt with."""
    return {
        "role": "system",
        "content": "Answer with only a JSON object that validates against this JSON schema, "
        f"without any other text:\n{_schema_json(schema)}",
    }


def repair_turn(content: str, errors: list[str], schema: type[BaseModel]) -> list[dict[str, Any]]:
    """The model's invalid answer and a user message quoting why it is invalid."""
    return [
        {"role": "assistant", "content": content},
        {
            "role": "user",
            "content": f"That answer is not valid: {'; '.join(errors)}. Reply with only the corrected "
            f"JSON object, matching this JSON schema:\n{_schema_json(schema)}",
        },
    ]
