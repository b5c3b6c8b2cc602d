"""The one codec between typed records and Redis hash fields: encode on every write, decode on every read."""

from __future__ import annotations

import json
import typing
from enum import Enum
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

R = TypeVar("R", bound=BaseModel)


def encode(fields: dict[str, Any]) -> dict[str, str]:
    """Hash field values: "" for None, compact JSON for containers and models, the value of an enum."""
    out = {}
    for key, value in fields.items():
        if value is None:
            out[key] = ""
        elif isinstance(value, (dict, list, tuple, BaseModel)):
            out[key] = json.dumps(to_jsonable_python(value), separators=(",", ":"))
        elif isinstance(value, Enum):
            out[key] = str(value.value)
        else:
            out[key] = str(value)
    return out


def decode(model: type[R], raw: dict[str, str]) -> R:
    """A record from its hash: an empty field is unset (the model's default), JSON fields parsed, the
    rest converted by the model's own types."""
    structured = _json_fields(model)
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if value == "":
            continue
        data[key] = json.loads(value) if key in structured else value
    return model.model_validate(data)


@lru_cache(maxsize=None)
def _json_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields stored as JSON: those whose type holds a dict, a list or a model."""
    return frozenset(name for name, field in model.model_fields.items() if _is_structured(field.annotation))


def _is_structured(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (dict, list, tuple):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_is_structured(arg) for arg in typing.get_args(annotation))
