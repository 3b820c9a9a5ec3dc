"""The settings: defaults, then USERSERVICE_* environment variables, then the caller's."""
import os
import re

DEFAULTS = dict(
    DATABASE_URL=None,
    DATABASE_MAX_CONNECTIONS=64,
    MIGRATE_ON_START=True,
    CLOUD_DOMAIN="pieces.cloud",
    OIDC_JWKS=None,
    OIDC_ISSUER=None,
    OIDC_AUDIENCE=None,
    MAX_CONTENT_LENGTH=256 * 1024,
    MAX_JSON_DEPTH=32,
    STREAM_PING_INTERVAL=25,
    STREAM_HEARTBEAT_INTERVAL=15,
    STREAM_POLL_INTERVAL=0.02,
    STREAM_QUEUE_SIZE=64,
    STREAM_MAX_SUBSCRIBERS=5000,
    CHANGE_LOG_KEEP=10000,
    ALLOWED_HOSTS=["localhost", "127.0.0.1", "[::1]"],
    ALLOWED_ORIGINS=[],
    API_KEY=None,
    MAX_JSON_STRING=64 * 1024,
    # What GET /.well-known/version answers: the PiecesOS version whose API clients may
    # expect here. pieces-cli 1.20.1 and the Sublime and Neovim plugins accept 12.x only.
    PIECES_OS_VERSION="12.0.0",
)

# How the clients read a PiecesOS version (the SDK wrapper's VersionChecker): anything else
# makes them fail before their first request.
CLIENT_VERSION_FORMAT = re.compile(r"\d+\.\d+\.\d+(?:[-.]\S+)?")


class ConfigurationError(ValueError):
    """A setting the service cannot start with; the message is one line that names it."""


def default_database_url():
    """SQLite in the user's data directory: the zero set-up default."""
    from platformdirs import user_data_dir

    return "sqlite:///" + os.path.join(user_data_dir("userservice"), "userservice.db")


def configure(app, test_config=None):
    """Defaults, then USERSERVICE_* environment variables, then the caller's overrides."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("USERSERVICE")
    if "USERSERVICE_API_KEY" in os.environ:  # as written: not parsed as JSON like the rest
        app.config["API_KEY"] = os.environ["USERSERVICE_API_KEY"]
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = default_database_url()
    check(app.config)
    return app.config


def check(config):
    """Refuse at start what clients could not use, rather than fail them later."""
    version = config["PIECES_OS_VERSION"]
    if not isinstance(version, str) or not CLIENT_VERSION_FORMAT.fullmatch(version):
        raise ConfigurationError("USERSERVICE_PIECES_OS_VERSION must be a version such as 12.0.0 "
                                 "(major.minor.patch), not %r" % (version,))
