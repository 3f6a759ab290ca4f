"""The HTTP API fuzzed from its own OpenAPI schema (Schemathesis): for an image classifier, a
text classifier and a language model, no generated request gets a 5xx and every answer conforms
to the schema (status codes, content types, bodies). Bounded: a fixed number of examples per
operation, derandomised."""

from __future__ import annotations

import pytest
import schemathesis  # the dev extra installs it: a broken install fails, never skips
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from dlab.serve import build_app

EXAMPLES = 40  # per operation and model
RUNS = ["image_run", "text_run", "gpt_run", "rating_run"]
pytestmark = pytest.mark.slow  # about 40 s: outside the unit tests, inside `make test`


def fuzz(app) -> dict[str, int]:
    """Every operation of `app`'s schema, EXAMPLES generated requests each; requests per route."""
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    counts: dict[str, int] = {}
    for result in loaded.get_all_operations():
        check(result.ok(), counts)
    return counts


def check(operation, counts: dict[str, int]) -> None:
    """EXAMPLES requests generated for one operation: none a 5xx, every answer as documented."""
    key = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def one(case):
        # the schema says what is well-formed; whether an input fits this model (its shape, a
        # text for a text model) the route checks, answering a documented 4xx that names it
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        assert response.status_code < 500, f"{key}: {response.text}"
        counts[key] = counts.get(key, 0) + 1

    one()


@pytest.mark.parametrize("name", RUNS)
def test_no_request_from_the_schema_breaks_the_server(name, request):
    run = request.getfixturevalue(name)
    counts = fuzz(build_app(run.path, max_wait_ms=1))
    assert {"POST /predict", "POST /generate", "GET /metadata"} <= set(counts)
    # a GET without parameters has one request to make; a body has many
    bodies = ["POST /predict", "POST /generate"] + (["POST /recommend"] if "rating" in name else [])
    assert all(counts[route] >= 20 for route in bodies), counts
    print(name, counts)
