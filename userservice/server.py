"""How userservice runs under gunicorn, from one place.

`userservice serve` and plain `gunicorn wsgi:app` (which reads gunicorn.conf.py at the top of
the repository) take the same bind address, worker class, limits, logging and hooks from
`gunicorn_settings`; the master checks the configuration, the port and the database before
any worker starts, so each problem is one line and a non-zero exit.
"""
import errno
import gc
import logging
import os
import shutil
import signal
import socket
import tempfile
import time

from gunicorn import glogging

from . import extension, feed_relay, storage
from .metrics import Unmeasured
from .config import checked_config, fail
from .greenlets import patched
from .log_format import logging_config
from .migrate import migrate
from .version import VERSION

DEFAULT_BIND = "127.0.0.1:39300"  # the first port the Pieces SDKs probe
WORKER_CLASSES = ("gevent", "gthread")
SPARE_CONNECTIONS = 1000  # gevent: connections beyond the streams, for ordinary requests
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
FEED_RELAY = "USERSERVICE_FEED_RELAY"
TURN_SECONDS = 0.001  # under gevent, how long a connection may keep its worker to itself
PARKED_GOODBYE_SECONDS = 5  # how long a leaving worker waits for its parked streams to close
log = logging.getLogger("userservice")


def gunicorn_settings(config, worker_class="gevent", threads=32):
    """gunicorn's settings for this configuration; command-line flags may override them."""
    return {
        "bind": [DEFAULT_BIND],
        "workers": 2,
        "worker_class": worker_class,
        "threads": threads,
        "worker_connections": config["STREAM_MAX_SUBSCRIBERS"] + SPARE_CONNECTIONS,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 2,  # gunicorn's default; a graceful shutdown waits out idle connections
        "errorlog": "-",
        "accesslog": None,  # the app writes its own, with secrets blanked (ACCESS_LOG)
        "logger_class": Logger,
        "control_socket_disable": True,
        # gunicorn takes SCRIPT_NAME and PATH_INFO headers from clients on 127.0.0.1 (its
        # forwarded_allow_ips) as set by a proxy; a SCRIPT_NAME the path lacks is its 500.
        "forwarder_headers": "",
        "logconfig_dict": logging_config(config["LOG_FORMAT"]),
        "on_starting": on_starting,
        "when_ready": when_ready,
        "post_worker_init": post_worker_init,
        "post_request": post_request,
        "worker_exit": worker_exit,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }


class Logger(glogging.Logger):
    """gunicorn's logger without gunicorn's access log. The app writes its own (ACCESS_LOG);
    gunicorn, seeing `logconfig_dict`, would format a line of its own for every request and
    then drop it, which cost a hot read about a twentieth of its CPU."""

    def access(self, resp, req, environ, request_time):
        pass


def on_starting(arbiter):
    """In the master, before it binds or forks: settings, port and database, one line each."""
    config = checked_config()
    cfg = arbiter.cfg
    os.environ.update(worker_environment(config, cfg.worker_class_str, cfg.threads))
    for address in cfg.bind:
        check_port_free(address)
    prepare_database(config["DATABASE_DIRECT_URL"])
    if config["METRICS"] and METRICS_DIR not in os.environ:
        os.environ[METRICS_DIR] = tempfile.mkdtemp(prefix="userservice-metrics-")
        arbiter.userservice_metrics_dir = os.environ[METRICS_DIR]
    if not storage.is_sqlite_url(config["DATABASE_URL"]):
        start_feed_relay(arbiter)


def start_feed_relay(arbiter):
    """One LISTEN connection for the instance: the relay, whose socket the workers are told."""
    relay = feed_relay.RelayProcess(dict(os.environ))
    relay.start()
    os.environ[FEED_RELAY] = relay.path
    arbiter.userservice_feed_relay = relay


def worker_environment(config, worker_class, threads):
    """What the workers' apps are told about the server they run in: a pool as large as
    their concurrency needs (unless set), and under gthread the streams a worker can hold:
    each pins a thread of the pool, a quarter of which stays for ordinary requests, which
    would otherwise queue behind streams and hang instead of the next stream getting 503."""
    environment = {}
    if "USERSERVICE_DATABASE_MAX_CONNECTIONS" not in os.environ:
        environment["USERSERVICE_DATABASE_MAX_CONNECTIONS"] = str(storage.pool_size(worker_class, threads))
    if worker_class == "gthread":
        held = max(1, min(config["STREAM_MAX_SUBSCRIBERS"], threads - max(2, threads // 4)))
        environment["USERSERVICE_STREAM_MAX_SUBSCRIBERS"] = str(held)
    return environment


def check_port_free(address):
    problem = port_problem(address)
    if problem:
        fail(problem)


def port_problem(address):
    """Why the server could not listen on a host:port address, or None."""
    host, _, port = address.rpartition(":")
    if address.startswith(("unix:", "fd://")) or not port.isdigit():
        return None
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            reason = "is in use by another program" if error.errno == errno.EADDRINUSE else error.strerror
            return "cannot listen on %s: the port %s" % (address, reason)
    return None


def prepare_database(url):
    """Reach the database and apply pending migrations, then let go of it before forking."""
    try:
        database = storage.Storage(url, max_connections=1, metrics=Unmeasured())
    except Exception as error:  # the driver's own words, without a traceback
        fail("cannot open the database %s: %s" % (storage.describe(url), one_line(error)))
    try:
        migrate(database)
    except Exception as error:
        fail("cannot reach the database %s: %s" % (storage.describe(url), one_line(error)))
    finally:
        database.close()


def one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def when_ready(arbiter):
    config = checked_config()
    log.info("userservice %s on %s (%s, %d workers), database: %s", VERSION,
             ", ".join("http://%s" % address for address in arbiter.cfg.bind),
             arbiter.cfg.worker_class_str, arbiter.cfg.workers, storage.describe(config["DATABASE_URL"]))


def post_worker_init(worker):
    """On SIGTERM, end this worker's streams first, so graceful shutdown need not wait for
    long-lived clients to leave (gunicorn has no hook for the start of a shutdown).

    The app is built by now: its objects (and the libraries') are moved out of the garbage
    collector's sight, so that a full collection under load walks only what requests made,
    instead of pausing the worker (and its every connection) over all of them."""
    gc.collect()
    gc.freeze()
    worker.takes_turns, worker.turn_started = patched("socket"), time.monotonic()  # see post_request
    previous = signal.getsignal(signal.SIGTERM)
    worker.log.info("Worker ready (pid: %s)", worker.pid)

    def on_term(signum, frame):
        worker.wsgi.extensions[extension.EXTENSION].follower.stop()
        worker.cfg.set("keepalive", 0)  # a connection whose stream ended closes, not idles
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def post_request(worker, req, environ, resp):
    """Under gevent a keep-alive connection whose next request is already there (a busy
    client, or pipelining) is served again at once: its reads and writes never wait, so it
    never lets the worker's other connections in, for hundreds of milliseconds under a
    stream of writes. So a connection that has had the worker for TURN_SECONDS gives up its
    turn after its request."""
    if worker.takes_turns and time.monotonic() - worker.turn_started >= TURN_SECONDS:
        import gevent

        gevent.sleep(0)
        worker.turn_started = time.monotonic()


def worker_exit(arbiter, worker):
    """In the worker, as it leaves: its parked streams are ended, a WebSocket with 1001
    (gunicorn waits only for the connections it still holds), and the requests it tallied reach the
    metrics files."""
    app = getattr(worker, "wsgi", None)  # None when the app failed to load
    service = getattr(app, "extensions", {}).get(extension.EXTENSION)
    if service is not None:
        service.follower.stop()
        if not service.parked.join(PARKED_GOODBYE_SECONDS):
            worker.log.warning("%d streams were not closed in time", len(service.parked.open))
        service.metrics.close()


def child_exit(arbiter, worker):
    """A worker's live gauges leave the metrics with it."""
    if os.environ.get(METRICS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(arbiter):
    relay = getattr(arbiter, "userservice_feed_relay", None)
    if relay is not None:
        relay.stop()
    directory = getattr(arbiter, "userservice_metrics_dir", None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
