"""Metadata filters compiled to parameterised SQL over ``items i``.

``{"cuisine": "한식"}`` equality; ``{"cuisine": ["한식", "중식"]}`` any of;
``{"servings": {"gte": 2, "lte": 4}}`` range (numbers or strings, type-aware);
nested fields with dots (``{"source.site": "x"}``). Field names are validated
and bound as JSON paths, values are bound parameters: nothing from a request
is ever spliced into SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

# One or more dot-separated identifiers; Unicode letters allowed (Korean keys).
_FIELD_NAME = re.compile(r"^[^\W\d]\w{0,63}(\.[^\W\d]\w{0,63}){0,3}$")
_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_ANY_OF = 1000  # alternatives in one any-of list


class FilterError(ValueError):
    """A metadata filter is malformed; the message says which part and why."""


def json_path(name: Any) -> str:
    """The SQLite JSON path of a (validated) metadata field name: ``a.b`` -> ``$."a"."b"``."""
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise FilterError(
            f"invalid filter field {name!r}: use letters, digits and '_' "
            "(dots for nested fields), not starting with a digit"
        )
    return "$." + ".".join(f'"{part}"' for part in name.split("."))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not (
        isinstance(value, float) and not np.isfinite(value)
    )


def _equality(path: str, value: Any, name: str) -> tuple[str, list[Any]]:
    if isinstance(value, bool):  # JSON true/false would otherwise equal 1/0
        return "json_type(i.metadata, ?) = ?", [path, "true" if value else "false"]
    if not _is_scalar(value):
        raise FilterError(f"filter {name!r}: value must be a string, number or boolean")
    return "json_extract(i.metadata, ?) = ?", [path, value]


def _any_of(path: str, values: list[Any], name: str) -> tuple[str, list[Any]]:
    if not values:
        raise FilterError(f"filter {name!r}: 'any of' list is empty")
    if len(values) > MAX_ANY_OF:
        raise FilterError(f"filter {name!r}: more than {MAX_ANY_OF} alternatives")
    for value in values:
        if not _is_scalar(value):
            raise FilterError(f"filter {name!r}: value must be a string, number or boolean")
    # One flat IN (...) per type, not a chain of ORs: SQLite refuses an expression tree
    # deeper than 1000, which a chain of ~1000 ORs is.
    plain = [v for v in values if not isinstance(v, bool)]
    flags = ["true" if v else "false" for v in values if isinstance(v, bool)]
    clauses: list[str] = []
    params: list[Any] = []
    if plain:
        clauses.append(f"json_extract(i.metadata, ?) IN ({_marks(len(plain))})")
        params += [path, *plain]
    if flags:
        clauses.append(f"json_type(i.metadata, ?) IN ({_marks(len(flags))})")
        params += [path, *flags]
    return "(" + " OR ".join(clauses) + ")", params


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _range(path: str, bounds: Mapping[str, Any], name: str) -> tuple[str, list[Any]]:
    unknown = set(bounds) - set(_RANGE_OPS)
    if not bounds or unknown:
        raise FilterError(
            f"filter {name!r}: range keys must be among {sorted(_RANGE_OPS)}, "
            f"got {sorted(map(str, bounds))}"
        )
    values = list(bounds.values())
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if not numeric and not all(isinstance(v, str) for v in values):
        raise FilterError(f"filter {name!r}: range bounds must be all numbers or all strings")
    if numeric and not all(np.isfinite(v) for v in values):
        raise FilterError(f"filter {name!r}: range bounds must be finite")
    # Type guard: SQLite orders every number before every string, so "60분" >= 30
    # would be true without it.
    types = "('integer', 'real')" if numeric else "('text')"
    clauses = [f"json_type(i.metadata, ?) IN {types}"]
    params: list[Any] = [path]
    for op, value in bounds.items():
        clauses.append(f"json_extract(i.metadata, ?) {_RANGE_OPS[op]} ?")
        params += [path, value]
    return " AND ".join(clauses), params


def compile_filters(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """SQL condition over ``items i`` plus its parameters (all conditions ANDed).

    ``{"cuisine": "한식"}`` equality; ``{"cuisine": ["한식", "중식"]}`` any of;
    ``{"servings": {"gte": 2, "lte": 4}}`` range (numbers or strings).
    """
    if not isinstance(filters, Mapping):
        raise FilterError(f"filters must be an object, got {type(filters).__name__}")
    clauses: list[str] = []
    params: list[Any] = []
    for name, value in filters.items():
        path = json_path(name)
        if isinstance(value, list | tuple):
            clause, extra = _any_of(path, list(value), name)
        elif isinstance(value, Mapping):
            clause, extra = _range(path, value, name)
        else:
            clause, extra = _equality(path, value, name)
        clauses.append(clause)
        params += extra
    return " AND ".join(clauses) or "1", params
