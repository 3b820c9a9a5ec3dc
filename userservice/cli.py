"""The `userservice` command: `serve` runs the service under gunicorn, `migrate` applies
pending migrations."""
import argparse
import os
import signal
import sys

from gunicorn.app.base import BaseApplication

from flask import Flask

from . import create_app, extension, storage
from .config import ConfigurationError, configure
from .migrate import migrate as apply_migrations
from .version import VERSION

WORKER_CLASSES = ("gevent", "gthread")


class Server(BaseApplication):
    """gunicorn, configured from the command line instead of a config file."""

    def __init__(self, options, app_config=None):
        self.options = options
        self.app_config = app_config
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return create_app(self.app_config)


def end_streams_on_shutdown(worker):
    """On SIGTERM, end this worker's streams first, so graceful shutdown need not wait for
    long-lived clients to leave (gunicorn has no hook for the start of a shutdown)."""
    previous = signal.getsignal(signal.SIGTERM)
    worker.log.info("Worker ready (pid: %s)", worker.pid)

    def on_term(signum, frame):
        worker.wsgi.extensions[extension.EXTENSION].follower.stop()
        worker.cfg.set("keepalive", 0)  # a connection whose stream ended closes, not idles
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def streams_per_worker(args, configured):
    """gthread serves each stream with a thread of its pool (a WebSocket with one more of its
    own): a quarter of the pool stays for ordinary requests, which would otherwise queue
    behind streams and hang instead of the next stream getting 503."""
    if args.worker_class != "gthread":
        return configured
    return max(1, min(configured, args.threads - max(2, args.threads // 4)))


def gunicorn_options(args, max_streams):
    host = "[%s]" % args.host if ":" in args.host else args.host
    options = {
        "bind": "%s:%d" % (host, args.port),
        "workers": args.workers,
        "worker_class": args.worker_class,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 2,  # gunicorn's default; a graceful shutdown waits out idle connections
        "errorlog": "-",
        "control_socket_disable": True,
        "post_worker_init": end_streams_on_shutdown,
    }
    if args.worker_class == "gevent":
        options["worker_connections"] = max_streams + 1000  # streams plus ordinary requests
    else:
        options["threads"] = args.threads
    return options


def serve(args):
    """Workers build the app after gunicorn forks them (after gevent has patched them); the
    first to start applies pending migrations under the migration lock."""
    config = configure(Flask("userservice"))
    print("userservice %s on http://%s:%d (%s, %d workers), database: %s" % (
        VERSION, args.host, args.port, args.worker_class, args.workers,
        storage.describe(config["DATABASE_URL"])), flush=True)
    max_streams = streams_per_worker(args, config["STREAM_MAX_SUBSCRIBERS"])
    overrides = {"STREAM_MAX_SUBSCRIBERS": max_streams}
    if "USERSERVICE_DATABASE_MAX_CONNECTIONS" not in os.environ:
        overrides["DATABASE_MAX_CONNECTIONS"] = storage.pool_size(args.worker_class, args.threads)
    Server(gunicorn_options(args, max_streams), overrides).run()


def migrate(args):
    app = create_app({"MIGRATE_ON_START": False})
    applied = apply_migrations(app.extensions[extension.EXTENSION].storage)
    print("applied: %s" % (", ".join(applied) or "nothing, the schema is up to date"))
    print("database: %s" % storage.describe(app.config["DATABASE_URL"]))


def parser():
    main_parser = argparse.ArgumentParser(prog="userservice", description=__doc__)
    main_parser.add_argument("--version", action="version", version=VERSION)
    commands = main_parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the service under gunicorn")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=39300)
    serve_parser.add_argument("--workers", type=int, default=2)
    serve_parser.add_argument("--worker-class", choices=WORKER_CLASSES, default="gevent",
                              help="gevent holds thousands of streams cheaply (default); "
                                   "gthread needs two threads per WebSocket")
    serve_parser.add_argument("--threads", type=int, default=32, help="threads per gthread worker")
    serve_parser.set_defaults(run=serve)
    commands.add_parser("migrate", help="apply pending migrations").set_defaults(run=migrate)
    return main_parser


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except ConfigurationError as error:
        sys.exit("userservice: %s" % error)  # one line, exit status 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
