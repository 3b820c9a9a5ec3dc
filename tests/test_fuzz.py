"""schemathesis against the app, on both backends: every operation of /openapi.json, data
generated from the document itself (valid and invalid), with the API key set.

Checked on every response: no 5xx, status code, content type, headers and body as the
document says, authentication enforced; and a refused request wrote nothing.
"""
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

import pytest

from userservice import openapi
from conftest import parts

API_KEY = "fuzz-key-5d0c2f"
MAX_EXAMPLES = 25  # per operation and backend: the whole run stays within a couple of minutes

CONFIG = {
    # NUL cannot be stored by PostgreSQL; the document says it is refused (400).
    "generation": {"max-examples": MAX_EXAMPLES, "allow-x00": False},
    # The coverage phase's "valid" boundary values ignore `format` (an empty date-time, say),
    # so only the fuzzing phase, which honours it, checks that valid bodies are accepted.
    "phases": {"coverage": {"checks": {"positive_data_acceptance": {"enabled": False}}}},
    "checks": {
        # 501 (token sign-in not configured) and 511 (nobody signed in) are answers the
        # original API documents, not failures; a 500 still is one.
        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "501", "511"]},
        # A schema-violating body may also be refused for being too large.
        "negative_data_rejection": {"expected-statuses": ["400", "401", "403", "404", "405", "406",
                                                          "409", "413", "415", "422"]},
    },
}


@pytest.fixture
def fuzzed_app(app_config, request):
    app_config["API_KEY"] = API_KEY
    return request.getfixturevalue("app")


def database_state(app):
    """What a request could have written: the change log position and every stored user."""
    service = parts(app)
    return service.change_log.position(), service.profiles.listing()


# The document this app serves with an API key set (tests/test_openapi.py checks they agree);
# pytest 9 cannot run schemathesis' fixture-based loader, so the app is given per call.
schema = schemathesis.openapi.from_dict(
    openapi.build(api_key=True), config=SchemathesisConfig.from_dict(CONFIG),
).exclude(path="/user/stream")  # endless by design


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_openapi_and_refusals_write_nothing(case, fuzzed_app, monkeypatch):
    monkeypatch.setattr(case.operation.schema, "app", fuzzed_app)  # for checks' own probes too
    before = database_state(fuzzed_app)
    response = case.call_and_validate(app=fuzzed_app, headers={"X-API-Key": API_KEY})
    if response.status_code >= 400:
        assert database_state(fuzzed_app) == before, "a refused request changed the database"
