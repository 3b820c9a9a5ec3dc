"""`userservice serve` and `userservice migrate`."""
import os

import click
from gunicorn.app.base import BaseApplication

from .. import server
from ..config import checked_config
from ..server import WORKER_CLASSES


class Gunicorn(BaseApplication):
    """gunicorn with the settings of server.py (those gunicorn.conf.py gives `gunicorn wsgi:app`)."""

    def __init__(self, options):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .. import create_app

        return create_app()


@click.command()
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=39300,
              help="Port to listen on (the Pieces SDKs look on 39300 first).")
@click.option("--workers", type=click.IntRange(1, 256), default=2, help="Worker processes.")
@click.option("--worker-class", type=click.Choice(WORKER_CLASSES), default="gevent",
              help="gevent holds thousands of streams cheaply; gthread needs a thread per stream.")
@click.option("--threads", type=click.IntRange(4, 10000), default=32, help="Threads per gthread worker.")
@click.option("--access-log/--no-access-log", default=None,
              help="One log line per request.  [default: the ACCESS_LOG setting, off]")
@click.option("--log-format", type=click.Choice(("text", "json")), default=None,
              help="Log lines as text, or one JSON object each.  [default: the LOG_FORMAT setting, text]")
def serve(host, port, workers, worker_class, threads, access_log, log_format):
    """Run the service under gunicorn, as `gunicorn wsgi:app` from the repository root does."""
    if access_log is not None:  # the workers' apps read their settings from the environment
        os.environ["USERSERVICE_ACCESS_LOG"] = "true" if access_log else "false"
    if log_format is not None:
        os.environ["USERSERVICE_LOG_FORMAT"] = log_format
    config = checked_config()
    bind = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    server.check_port_free(bind)  # before gunicorn says anything: one line, then exit
    server.prepare_database(config["DATABASE_DIRECT_URL"])
    options = server.gunicorn_settings(config, worker_class, threads)
    options.update(bind=[bind], workers=workers)
    Gunicorn(options).run()


@click.command()
def migrate():
    """Apply pending migrations and exit."""
    from .. import storage
    from ..metrics import Unmeasured
    from ..migrate import migrate as apply_migrations

    config = checked_config({"MIGRATE_ON_START": False})
    database = storage.Storage(config["DATABASE_DIRECT_URL"], max_connections=1, metrics=Unmeasured())
    try:
        applied = apply_migrations(database)
    finally:
        database.close()
    click.echo("applied: %s" % (", ".join(applied) or "nothing, the schema is up to date"))
    click.echo("database: %s" % storage.describe(config["DATABASE_URL"]))
