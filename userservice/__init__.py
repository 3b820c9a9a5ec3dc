"""userservice: the Pieces OS User and Users API as a Flask application."""
import os

from flask import Flask

__version__ = "0.1.0"


def default_database_url():
    """SQLite in the user's data directory: the zero set-up default."""
    from platformdirs import user_data_dir

    return "sqlite:///" + os.path.join(user_data_dir("userservice"), "userservice.db")


def create_app(test_config=None):
    """Build the application and wire everything into it."""
    app = Flask(__name__)
    configure(app, test_config)
    init_app(app)
    return app


def configure(app, test_config=None):
    """Defaults, then USERSERVICE_* environment variables, then the caller's overrides."""
    app.config.from_mapping(
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
    )
    app.config.from_prefixed_env("USERSERVICE")
    if "USERSERVICE_API_KEY" in os.environ:  # as written: not parsed as JSON like the rest
        app.config["API_KEY"] = os.environ["USERSERVICE_API_KEY"]
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = default_database_url()
    return app.config


def init_app(app, url_prefix=None):
    """Wire the extensions and register the blueprints into any Flask app."""
    from . import commits, db, errors, guards, openapi, stream
    from .api import stream as stream_api, user, users, wellknown

    db.init_app(app)
    commits.init_app(app)
    stream.init_app(app)
    stream_api.init_app(app)
    errors.init_app(app)
    blueprints = (user.bp, users.bp, stream_api.bp, wellknown.bp, openapi.bp)
    guards.init_app(app, blueprints)
    for blueprint in blueprints:
        app.register_blueprint(blueprint, url_prefix=url_prefix)
