"""config.py: every setting is checked when the app is made. A bad value stops create_app,
`userservice serve` and `gunicorn wsgi:app` with exit status 2 and one line naming the
variable, the value and what is expected: no traceback, and a secret's value never shown."""
import os
import subprocess
import sys

import pytest

from userservice import config, create_app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)

# A value each setting refuses, as an operator would write it in the environment.
BAD = {
    "DATABASE_URL": "mysql://root@localhost/users",
    "DATABASE_DIRECT_URL": "mysql://root@localhost/users",
    "DATABASE_MAX_CONNECTIONS": "0",
    "DATABASE_MAX_IDLE": "0",
    "FEED_RELAY": "relative/relay.sock",
    "MIGRATE_ON_START": "maybe",
    "CLOUD_DOMAIN": "not a domain",
    "OIDC_JWKS": "/nowhere/jwks.json",
    "OIDC_ISSUER": "[1, 2]",
    "OIDC_AUDIENCE": "42",
    "MAX_CONTENT_LENGTH": "abc",
    "MAX_JSON_DEPTH": "0",
    "MAX_JSON_STRING": "-1",
    "STREAM_PING_INTERVAL": "0",
    "STREAM_HEARTBEAT_INTERVAL": "soon",
    "STREAM_POLL_INTERVAL": "120",
    "STREAM_QUEUE_SIZE": "0",
    "STREAM_MAX_SUBSCRIBERS": "lots",
    "CHANGE_LOG_KEEP": "0",
    "ALLOWED_HOSTS": "good.example, bad host!",
    "ALLOWED_ORIGINS": "not-an-origin",
    "API_KEY": "short key",
    "ACCESS_LOG": "sometimes",
    "LOG_FORMAT": "xml",
    "METRICS": "2",
    "PIECES_OS_VERSION": "twelve",
    "BODY_TIMEOUT": "forever",
}
SECRETS = ("API_KEY",)


def test_every_setting_has_a_bad_value_under_test():
    assert set(BAD) == set(config.SETTINGS)


def assert_one_line_naming(output, name, value):
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    assert "USERSERVICE_%s=" % name in lines[0] and "expected" in lines[0], lines[0]
    if name in SECRETS:
        assert value not in lines[0]
    else:
        assert value in lines[0]


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_setting_stops_create_app_with_one_line(name, sqlite_url, monkeypatch):
    monkeypatch.setenv("USERSERVICE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("USERSERVICE_" + name, BAD[name])
    with pytest.raises(config.ConfigError) as error:
        create_app()
    assert_one_line_naming(str(error.value), name, BAD[name])


def run(argv, env, timeout=60):
    process = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=timeout)
    return process.returncode, process.stdout


COMMANDS = {
    "userservice serve": [os.path.join(BIN, "userservice"), "serve", "--port", "1"],
    "gunicorn wsgi:app": [os.path.join(BIN, "gunicorn"), "wsgi:app"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_setting_stops_the_server_with_exit_2_and_one_line(command, name, sqlite_url):
    env = {**os.environ, "USERSERVICE_DATABASE_URL": sqlite_url, "USERSERVICE_" + name: BAD[name]}
    status, output = run(COMMANDS[command], env)
    assert status == 2, output
    assert_one_line_naming(output, name, BAD[name])


def test_database_direct_url_defaults_to_the_database_url(sqlite_url, tmp_path):
    app = create_app({"DATABASE_URL": sqlite_url})
    other = "sqlite:///%s" % (tmp_path / "direct.db")
    second = create_app({"DATABASE_URL": sqlite_url, "DATABASE_DIRECT_URL": other})
    try:
        assert app.config["DATABASE_DIRECT_URL"] == sqlite_url
        assert second.config["DATABASE_DIRECT_URL"] == other
    finally:
        app.extensions["userservice"].close()
        second.extensions["userservice"].close()


def test_values_from_the_environment_are_stored_in_their_types(sqlite_url, monkeypatch):
    monkeypatch.setenv("USERSERVICE_STREAM_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("USERSERVICE_ALLOWED_HOSTS", "a.example, b.example")
    monkeypatch.setenv("USERSERVICE_ACCESS_LOG", "true")
    app = create_app({"DATABASE_URL": sqlite_url})
    try:
        assert app.config["STREAM_POLL_INTERVAL"] == 0.5
        assert app.config["ALLOWED_HOSTS"] == ["a.example", "b.example"]
        assert app.config["ACCESS_LOG"] is True
    finally:
        app.extensions["userservice"].close()


def test_a_setting_given_by_the_caller_is_named_as_the_caller_named_it(sqlite_url):
    with pytest.raises(config.ConfigError, match=r"^STREAM_QUEUE_SIZE=0: expected an integer"):
        create_app({"DATABASE_URL": sqlite_url, "STREAM_QUEUE_SIZE": 0})


def test_database_url_password_is_never_shown(sqlite_url):
    with pytest.raises(config.ConfigError) as error:
        create_app({"DATABASE_URL": "mysql://user:hunter2@db/users"})
    assert "hunter2" not in str(error.value) and "[redacted]" in str(error.value)


NO_DRIVER = ("import sys; sys.modules['psycopg'] = None  # as if psycopg were not installed\n"
             "from userservice.cli import main; main()")


def test_postgresql_without_its_driver_names_the_extra_to_install():
    env = {**os.environ, "USERSERVICE_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test"}
    status, output = run([sys.executable, "-c", NO_DRIVER, "serve", "--port", "1"], env)
    assert status == 2, output
    assert output.strip().splitlines() == [
        "userservice: USERSERVICE_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test: "
        "PostgreSQL needs its driver: pip install 'userservice[postgres]'"]


def test_a_misspelt_variable_is_reported(sqlite_url, monkeypatch, caplog):
    monkeypatch.setenv("USERSERVICE_MAX_CONTENT_LENGHT", "1000")
    app = create_app({"DATABASE_URL": sqlite_url})
    app.extensions["userservice"].close()
    assert "USERSERVICE_MAX_CONTENT_LENGHT is not a setting" in caplog.text
