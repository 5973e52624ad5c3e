"""Checking request fields: pure functions from a parsed body to clean values or errors.

Errors take the contract's shape, ``{"field": ["message", ...]}``. A form body
carries only strings, so with ``from_form`` numbers and booleans are read from
their text; a JSON body must carry the right JSON types.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from api import jsonsafe

Errors = dict[str, list[str]]

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
# Control characters have no place in any text field we store or forward, and
# lone UTF-16 surrogates (JSON's "\ud800") cannot be stored or rendered.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class ValidationFailed(Exception):
    def __init__(self, errors: Errors, message: str = "The given data was invalid."):
        super().__init__(message)
        self.errors = errors
        self.message = message


@dataclass(frozen=True)
class Field:
    kind: str  # "string", "text", "integer", "number", "boolean", "object"
    required: bool = False
    nullable: bool = False
    max_length: int | None = None
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    pattern_message: str = ""
    check: Callable[[Any], str | None] | None = None
    clean: Callable[[Any], Any] | None = None  # the value as stored; a ValueError's text is the problem


def validate(
    data: dict[str, Any],
    schema: dict[str, Field],
    *,
    partial: bool = False,
    from_form: bool = False,
    ignored: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Clean values for the fields present in ``data``; raise ValidationFailed listing every problem.

    ``partial`` (PATCH) makes no field required. Fields in ``ignored`` (read-only
    ones a client may echo back from a GET) are dropped; any other unknown field
    is an error, so a misspelt field is never silently ignored.
    """
    errors: Errors = {}
    clean: dict[str, Any] = {}
    for name in data:
        if name not in schema and name not in ignored:
            errors.setdefault(name, []).append(f"The {name} field is not a known field.")
    for name, spec in schema.items():
        if name not in data or _blank(data[name], spec):
            if spec.required and (name in data or not partial):
                errors.setdefault(name, []).append(f"The {name} field is required.")
            elif name in data:
                if spec.nullable:
                    clean[name] = None
                else:  # null or "" for a field that must hold a value when given
                    errors.setdefault(name, []).append(f"The {name} field may not be empty.")
            continue
        value, problem = _coerce(name, data[name], spec, from_form)
        if problem is None and spec.check is not None:
            problem = spec.check(value)
        if problem is None and spec.clean is not None:
            try:
                value = spec.clean(value)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            errors.setdefault(name, []).append(problem)
        else:
            clean[name] = value
    if errors:
        raise ValidationFailed(errors)
    return clean


def _blank(value: Any, spec: Field) -> bool:
    if value is None:
        return True
    return spec.kind in ("string", "text") and isinstance(value, str) and value.strip() == ""


def _coerce(name: str, value: Any, spec: Field, from_form: bool) -> tuple[Any, str | None]:
    if spec.kind in ("string", "text"):
        if not isinstance(value, str):
            return None, f"The {name} must be a string."
        value = value.strip()
        if CONTROL.search(value) or (spec.kind == "string" and ("\n" in value or "\r" in value)):
            return None, f"The {name} must not contain control characters."
        if spec.max_length is not None and len(value) > spec.max_length:
            return None, f"The {name} may not be greater than {spec.max_length} characters."
        if spec.choices and value not in spec.choices:
            return None, f"The {name} must be one of: {', '.join(spec.choices)}."
        if spec.pattern is not None and not spec.pattern.fullmatch(value):
            return None, spec.pattern_message or f"The {name} format is invalid."
        return value, None
    if spec.kind == "integer":
        if from_form and isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"The {name} must be an integer."
        return _within_bounds(name, value, spec)
    if spec.kind == "number":
        if from_form and isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None, f"The {name} must be a number."
        return _within_bounds(name, value, spec)
    if spec.kind == "boolean":
        if from_form and isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS, None
        if not isinstance(value, bool):
            return None, f"The {name} field must be true or false."
        return value, None
    if spec.kind == "object":
        if not isinstance(value, dict):
            return None, f"The {name} must be a JSON object."
        if jsonsafe.has_unstorable_text(value):
            return None, f"The {name} must not contain NUL characters or lone surrogates."
        return value, None
    raise AssertionError(f"unknown field kind {spec.kind!r}")


def _within_bounds(name: str, value: float, spec: Field) -> tuple[Any, str | None]:
    if spec.min_value is not None and value < spec.min_value:
        return None, f"The {name} must be at least {spec.min_value}."
    if spec.max_value is not None and value > spec.max_value:
        return None, f"The {name} may not be greater than {spec.max_value}."
    return value, None
