"""userservice: the Pieces OS User and Users API as a Flask application."""
from flask import Flask

from . import errors, extension, fast_reads, guards, logs, metrics, openapi, pages
from .api import allocations, os as os_api, stream, user, users, wellknown
from .config import configure
from .version import VERSION as __version__

__all__ = ["__version__", "configure", "create_app", "init_app"]


def create_app(test_config=None):
    """Build the application and wire everything into it, the hot reads' fast path in front."""
    app = Flask(__name__, static_folder=None)  # the pages blueprint serves static/, guarded
    configure(app, test_config)
    init_app(app)
    fast_reads.init_app(app)
    return app


def init_app(app, url_prefix=None):
    """Wire the service into any Flask app (after `configure`): request ids and logs, its own
    database, change feed and stream, metrics, the error handler, the guards, the blueprints
    under `url_prefix`, and its commands on the app's `flask` command."""
    from . import cli  # the commands import the app factory: imported here, not above

    logs.init_app(app)
    service = extension.init_app(app, metrics.for_config(app.config))
    stream.init_app(app)
    users.init_app(app)
    errors.init_app(app)
    wellknown.init_app(app)
    blueprints = [user.bp, users.bp, os_api.bp, allocations.bp, stream.bp, wellknown.bp, openapi.bp, pages.bp]
    if app.config["METRICS"]:
        metrics.init_app(app)
        blueprints.append(metrics.bp)
    guards.init_app(app, blueprints)
    for blueprint in blueprints:
        app.register_blueprint(blueprint, url_prefix=url_prefix)
    cli.init_app(app)
    return service
