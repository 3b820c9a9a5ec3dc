"""The settings: defaults, then USERSERVICE_* environment variables, then the caller's.

Every setting has a type and a range, checked when the app is made: a typo stops the service
at start with one line naming the variable, its value and what is expected, instead of being
found by the first request that trips over it.
"""
import importlib
import logging
import os
import re
import sys

from flask import Flask

PREFIX = "USERSERVICE_"
LOG = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A setting the service cannot run with; the message is one line for the operator."""


class Setting:
    """One setting: its default, what it must be (for the message), and a check that returns
    the value in its proper type or raises ValueError."""

    def __init__(self, default, expected, check, secret=False):
        self.default, self.expected, self.check, self.secret = default, expected, check, secret


def integer(low, high):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError()
        return value
    return "an integer from %d to %d" % (low, high), check


def number(low, high):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError()
        return value
    return "a number of seconds from %g to %g" % (low, high), check


def boolean(value):
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise ValueError()


def text_matching(pattern):
    regex = re.compile(pattern)

    def check(value):
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise ValueError()
        return value
    return check


def optional(check):
    def check_optional(value):
        return None if value is None or value == "" else check(value)
    return check_optional


def names(pattern):
    """A list given as a JSON list or as one comma-separated string (the environment)."""
    regex = re.compile(pattern)

    def check(value):
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(i, str) and regex.fullmatch(i) for i in value):
            raise ValueError()
        return list(value)
    return check


def database_url(value):
    if not isinstance(value, str) or value.partition("://")[0] not in DATABASE_SCHEMES:
        raise ValueError()
    if value.startswith("postgres"):
        try:
            importlib.import_module("psycopg")
        except ImportError:
            raise ConfigError("PostgreSQL needs its driver: pip install 'userservice[postgres]'") from None
    return value


def optional_database_url(value):
    return None if value is None or value == "" else database_url(value)


def unix_socket_path(value):
    if not isinstance(value, str) or not os.path.isabs(value) or len(value.encode()) > 107:
        raise ValueError()
    return value


def jwks_source(value):
    if not value.startswith("https://") and not os.path.isfile(value):
        raise ValueError()
    return value


DATABASE_SCHEMES = ("sqlite", "sqlite+pool", "postgres", "postgresql", "postgresql+pool")
HOST_NAME = r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\]|\*"
ORIGIN = r"[a-z][a-z0-9+.-]*://[^/\s]+"
SETTINGS = {
    "DATABASE_URL": Setting(None, "sqlite:///PATH or postgresql://USER@HOST:PORT/DB", database_url, secret=True),
    # Migrations and the change feed's LISTEN need a session of their own: behind PgBouncer in
    # transaction pooling mode, point this at PostgreSQL itself (default: DATABASE_URL).
    "DATABASE_DIRECT_URL": Setting(None, "postgresql://USER@HOST:PORT/DB, or empty for DATABASE_URL",
                                   optional_database_url, secret=True),
    "DATABASE_MAX_CONNECTIONS": Setting(64, *integer(1, 10000)),
    "DATABASE_MAX_IDLE": Setting(60, *number(0.1, 86400)),
    # The Unix socket of the instance's change-feed relay (feed_relay.py): set by the gunicorn
    # master for its workers; empty, an app follows the change log on its own.
    "FEED_RELAY": Setting(None, "the absolute path of a Unix socket, or empty", optional(unix_socket_path)),
    "MIGRATE_ON_START": Setting(True, "true or false", boolean),
    "CLOUD_DOMAIN": Setting("pieces.cloud", "a DNS name", text_matching(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")),
    "OIDC_JWKS": Setting(None, "the path of a JWKS file, or an https:// URL", optional(jwks_source)),
    "OIDC_ISSUER": Setting(None, "a non-empty string", optional(text_matching(r".+"))),
    "OIDC_AUDIENCE": Setting(None, "a non-empty string", optional(text_matching(r".+"))),
    "MAX_CONTENT_LENGTH": Setting(256 * 1024, *integer(64, 64 * 1024 * 1024)),
    "MAX_JSON_DEPTH": Setting(32, *integer(2, 500)),
    "MAX_JSON_STRING": Setting(64 * 1024, *integer(16, 64 * 1024 * 1024)),
    "STREAM_PING_INTERVAL": Setting(25, *number(0.05, 3600)),
    "STREAM_HEARTBEAT_INTERVAL": Setting(15, *number(0.05, 3600)),
    "STREAM_POLL_INTERVAL": Setting(0.02, *number(0.001, 60)),
    "STREAM_QUEUE_SIZE": Setting(64, *integer(1, 100000)),
    "STREAM_MAX_SUBSCRIBERS": Setting(5000, *integer(1, 1000000)),
    "CHANGE_LOG_KEEP": Setting(10000, *integer(1, 10 ** 9)),
    "ALLOWED_HOSTS": Setting(["localhost", "127.0.0.1", "[::1]"], "host names, comma-separated, or *",
                             names(HOST_NAME)),
    "ALLOWED_ORIGINS": Setting([], "origins like chrome-extension://ID, comma-separated", names(ORIGIN)),
    "API_KEY": Setting(None, "a key of 12 to 1024 printable characters, no spaces",
                       optional(text_matching(r"[\x21-\x7e]{12,1024}")), secret=True),
    "ACCESS_LOG": Setting(False, "true or false", boolean),
    "LOG_FORMAT": Setting("text", "text or json", text_matching(r"text|json")),
    "METRICS": Setting(True, "true or false", boolean),
    "BODY_TIMEOUT": Setting(30, *number(0.05, 3600)),
    # What GET /.well-known/version answers: the PiecesOS version whose API clients may expect
    # here (pieces-cli 1.20.1 and the Sublime and Neovim plugins accept 12.x only; see
    # api/wellknown.py), in the form the SDK wrapper's VersionChecker parses: anything else
    # makes clients fail before their first request.
    "PIECES_OS_VERSION": Setting("12.0.0", "a version such as 12.0.0 (major.minor.patch)",
                                 text_matching(r"\d+\.\d+\.\d+(?:[-.]\S+)?")),
}
DEFAULTS = {name: setting.default for name, setting in SETTINGS.items()}


def default_database_url():
    """SQLite in the user's data directory: the zero set-up default."""
    from platformdirs import user_data_dir

    return "sqlite:///" + os.path.join(user_data_dir("userservice"), "userservice.db")


def configure(app, test_config=None):
    """Defaults, then USERSERVICE_* environment variables, then the caller's overrides; then
    every setting checked (ConfigError) and stored in its proper type."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env(PREFIX.rstrip("_"))
    if PREFIX + "API_KEY" in os.environ:  # as written: not parsed as JSON like the rest
        app.config["API_KEY"] = os.environ[PREFIX + "API_KEY"]
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = default_database_url()
    check(app.config, set(test_config or ()))
    if app.config["DATABASE_DIRECT_URL"] is None:
        app.config["DATABASE_DIRECT_URL"] = app.config["DATABASE_URL"]
    return app.config


def checked_config(overrides=None):
    """The settings from the environment (and `overrides`) for a server process, checked; a
    bad one ends the process (exit 2)."""
    try:
        return configure(Flask("userservice"), overrides)
    except ConfigError as error:
        fail(error, status=2)


def fail(message, status=1):
    """End the process with one line for the operator, no traceback."""
    print("userservice: %s" % message, file=sys.stderr, flush=True)
    sys.exit(status)


def check(config, given_by_caller=()):
    """Check every setting in place; the first bad one raises ConfigError."""
    for name, setting in SETTINGS.items():
        value = config[name]
        try:
            config[name] = setting.check(value)
        except (ValueError, TypeError) as error:
            problem = str(error) if isinstance(error, ConfigError) else "expected %s" % setting.expected
            raise ConfigError("%s=%s: %s" % (source(name, given_by_caller), shown(value, setting.secret),
                                             problem)) from None
    warn_about_unknown_names()


def source(name, given_by_caller):
    """The name the operator wrote: the environment variable, unless the caller set it."""
    return name if name in given_by_caller or PREFIX + name not in os.environ else PREFIX + name


def shown(value, secret):
    """A value as it may be printed: a secret's text is never shown, nor a URL's password."""
    if secret and isinstance(value, str) and "://" not in value:
        return "[redacted]"
    text = value if isinstance(value, str) else repr(value)
    text = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1[redacted]@", text)
    return text if len(text) <= 80 else text[:77] + "..."


def warn_about_unknown_names():
    """A misspelt variable would be silently ignored: say so (test-suite variables aside)."""
    for variable in os.environ:
        name = variable[len(PREFIX):]
        if variable.startswith(PREFIX) and name not in SETTINGS and not name.startswith("TEST_"):
            LOG.warning("%s is not a setting of userservice; it is ignored", variable)
