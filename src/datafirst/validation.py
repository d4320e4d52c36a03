"""Readable messages for a settings file (datafirst.yaml, a contract) that does not validate.

Pydantic's own text names its error types and links to its web site; a user needs the place
in their file, what is wrong there, and for a misspelt key or value the one they meant.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def describe(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem, `place: what is wrong`, the place a key path in the file (`link.thresholds.high`,
    `blocking_rules[0]`); identical lines once (a value that fits no member of a union fails each)."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        place, found = _walk(model, err["loc"])
        line = f"{_place(place)}: {_problem(err, place, found)}"
        if line not in lines:
            lines.append(line)
    return lines


def _problem(err: dict, place: list, found: list) -> str:
    """What is wrong at `place`; `found` holds the annotation at each step of the place (the
    model first), None where the path leaves the models."""
    kind, value, annotation = err["type"], err.get("input"), found[-1]
    if kind == "extra_forbidden":
        parent = found[-2] if len(found) > 1 else None
        known = list(parent.model_fields) if _is_model(parent) else []
        return f"unknown key `{place[-1]}`" + _suggest(str(place[-1]), known, "keys")
    if kind == "missing":
        return "missing (this key is required)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"should hold keys (indented `key: value` lines); got {_shown(value)}"
    if kind == "literal_error":
        choices = [str(c) for m in _union_members(annotation) if typing.get_origin(m) is typing.Literal
                   for c in typing.get_args(m)]
        return f"{value!r} is not one of: {', '.join(choices)}" + _suggest(str(value), choices, None)
    message = err["msg"].removeprefix("Value error, ")
    return message if isinstance(value, (dict, list)) else f"{message}; got {_shown(value)}"


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _suggest(word: str, known: list[str], what: str | None) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{close[0]}`?"
    return f"; the {what} here are: {', '.join(known)}" if what and known else ""


def _walk(model: type[BaseModel], loc: tuple) -> tuple[list, list]:
    """The key path of an error's `loc` without pydantic's union tags (`str`, `list[str]`), and the
    annotation at each step of it, the model first (None where the path leaves the models)."""
    place: list = []
    found: list = [model]
    for part in loc:
        options = _union_members(found[-1])
        if len(options) > 1 and isinstance(part, str):
            tagged = [m for m in options if _tag(m) == part]
            if tagged:  # pydantic tried each member of a union and says which one this error is from
                found[-1] = tagged[0]
                continue
        found.append(_step(options[0] if len(options) == 1 else None, part))
        place.append(part)
    return place, found


def _step(annotation: Any, part: Any) -> Any:
    if _is_model(annotation):
        field = annotation.model_fields.get(part)
        return field.annotation if field is not None else None
    origin = typing.get_origin(annotation)
    if origin is dict:
        return typing.get_args(annotation)[1]
    if origin is list:
        return typing.get_args(annotation)[0]
    return None


def _union_members(annotation: Any) -> list:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for m in typing.get_args(annotation) if m is not type(None)]
    return [annotation]


def _tag(member: Any) -> str:
    return member.__name__ if isinstance(member, type) else str(member).replace("typing.", "")


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _place(place: list) -> str:
    text = ""
    for part in place:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = str(part) if str(part).replace("_", "a").isalnum() else f'"{part}"'
            text += f".{key}" if text else key
    return text or "(the whole file)"
