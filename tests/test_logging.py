"""Secrets never reach a log: not in the app's records (caplog), not on a real server's stderr,
not even in the traceback of an unexpected failure."""
import logging

import pytest
import requests

from userservice import schemas
from userservice.api.body import json_body

API_KEY = "log-api-key-0e9d77c1"
ACCESS_TOKEN = "gho_accesstoken_5b1f0a"
OPENAI_KEY = "sk-openai-secret-9c2e"
ID_TOKEN = "eyJ.idtoken.secret-44aa"
REFRESH_TOKEN = "refresh-secret-71bd"
SECRETS = (API_KEY, ACCESS_TOKEN, OPENAI_KEY, ID_TOKEN, REFRESH_TOKEN)

SELECT = {"user_id": "auth0|9", "nickname": "mark",
          "identities": [{"provider": "github", "user_id": "gh-9", "access_token": ACCESS_TOKEN}],
          "user_metadata": {"global_id": "g-9", "open_AI": {"api_key": OPENAI_KEY}}}
TOKEN = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 60,
         "id_token": ID_TOKEN, "refresh_token": REFRESH_TOKEN}


def exercise(send):
    """Requests that carry every secret, succeeding and failing: `send(method, path, **kw)`."""
    send("post", "/user/select", json=SELECT)
    send("post", "/user/select", json={**SELECT, "logins_count": "not a number"})
    send("post", "/users/authenticate/from_token", json=TOKEN)
    send("post", "/users/authenticate/from_token", json={**TOKEN, "token_type": ACCESS_TOKEN})
    send("get", "/user/stream?api_key=" + API_KEY + "x")
    send("get", "/user", headers={"X-API-Key": API_KEY[:-1]})


@pytest.fixture
def keyed_app(app_config, request):
    app_config["API_KEY"] = API_KEY
    return request.getfixturevalue("app")


def test_app_log_records_hold_no_secrets(keyed_app, caplog):
    client = keyed_app.test_client()
    caplog.set_level(logging.DEBUG)

    def send(method, path, headers=None, **kwargs):
        return getattr(client, method)(path, headers={"X-API-Key": API_KEY, **(headers or {})}, **kwargs)

    exercise(send)
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert not [secret for secret in SECRETS if secret in text]


def test_unexpected_failure_logs_traceback_without_secrets(keyed_app, caplog):
    """A failure whose message quotes a token: logged, with the token blanked out."""
    def leaky():
        token = json_body(schemas.oauth_token)
        raise RuntimeError("driver echoed %s and %s" % (token["access_token"], API_KEY))

    keyed_app.add_url_rule("/leaky", view_func=leaky, methods=["POST"])
    response = keyed_app.test_client().post("/leaky", json=TOKEN, headers={"X-API-Key": API_KEY})
    assert response.status_code == 500
    assert not [secret for secret in SECRETS if secret in response.get_data(as_text=True)]
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = record.getMessage()
    assert "RuntimeError: driver echoed [redacted] and [redacted]" in text
    assert not [secret for secret in SECRETS if secret in text]


def test_server_stderr_holds_no_secrets(database_url, serve):
    server = serve(database_url, extra_env={"USERSERVICE_API_KEY": API_KEY})

    def send(method, path, headers=None, **kwargs):
        headers = {"X-API-Key": API_KEY, **(headers or {})}
        response = getattr(requests, method)(server.url + path, headers=headers, timeout=5, stream=True, **kwargs)
        response.close()

    exercise(send)
    output = server.stop()
    assert "Booting worker" in output  # the log was captured
    assert not [secret for secret in SECRETS if secret in output]
