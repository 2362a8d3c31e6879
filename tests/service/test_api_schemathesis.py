"""Schemathesis against /openapi.json, in-process on the tiny-encoder app (issue #18).

Bounded: a few generated examples per operation, no shrinking, about half a minute.
Checks: no 5xx, status codes and bodies that the published schema declares.
"""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from tests.index.tiny_encoder import TinyEncoder
from tests.service.helpers import ADMIN_TOKEN, make_settings

MAX_EXAMPLES = 8
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@pytest.fixture(scope="module")
def api_schema(tiny_index_dir, tiny_encoder: TinyEncoder, tmp_path_factory):  # type: ignore[no-untyped-def]
    # A copy: generated PUT / DELETE /admin/items calls change the catalog they run on.
    index_dir = shutil.copytree(tiny_index_dir, tmp_path_factory.mktemp("fuzzed") / "index")
    app = create_app(make_settings(index_dir), encoder=tiny_encoder)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    return loaded.exclude(path_regex="^/(metrics)?$")  # not JSON: Prometheus text, HTML


def check_operation(operation) -> str | None:  # type: ignore[no-untyped-def]
    """None when every generated case passed, else the first failure."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case) -> None:  # type: ignore[no-untyped-def]
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {ADMIN_TOKEN}"}
        case.call_and_validate(checks=CHECKS)

    try:
        run()
    except Exception as exc:  # the failure report, whatever check raised it
        return f"{type(exc).__name__}: {exc}"[:3000]
    return None


def test_api_conforms_to_its_schema(api_schema) -> None:  # type: ignore[no-untyped-def]
    operations = [result.ok() for result in api_schema.get_all_operations()]
    failures = {op.label: check_operation(op) for op in operations}

    assert len(operations) >= 10
    assert {label: failure for label, failure in failures.items() if failure} == {}
