"""Prometheus metrics of one app, served at GET /metrics behind the same guards as the rest.

Under gunicorn (`userservice serve`, or `gunicorn wsgi:app` with gunicorn.conf.py) the master
gives the workers a directory in PROMETHEUS_MULTIPROC_DIR, and prometheus_client's
multiprocess mode adds the workers' numbers up at every scrape. prometheus_client reads that
variable when it is first imported, so it is imported here only when an app is built, in
the worker. With METRICS off nothing is recorded and /metrics does not exist.

Requests are tallied in plain memory and added to prometheus_client's values in batches
(`RequestTally`): there each value written takes a lock and, in multiprocess mode, a write
to a mapped file, which cost a hot read about a tenth of its CPU.
"""
import bisect
import contextlib
import os
import threading
import time

from flask import Blueprint, Response, g, request

from . import extension
from .guards import serves

bp = Blueprint("metrics", __name__)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FLUSH_SECONDS = 1  # how soon a worker's requests reach the other workers' scrapes


class Metrics:
    """What the app counts. Every part that records gets this object when it is built."""

    def __init__(self):
        import prometheus_client as prometheus

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = prometheus.CollectorRegistry()
        new = {"registry": None if self.multiprocess else self.registry}
        self.requests = prometheus.Counter(
            "userservice_requests", "HTTP requests answered, by route and status",
            ["route", "method", "status"], **new)
        self.latency = prometheus.Histogram(
            "userservice_request_seconds", "Time to answer a request (to the start of a stream's body), by route",
            ["route"], buckets=LATENCY_BUCKETS, **new)
        self.streams = prometheus.Gauge(
            "userservice_streams_open", "Open /user/stream subscriptions, by protocol", ["protocol"],
            multiprocess_mode="livesum", **new)
        self.lagged = prometheus.Counter(
            "userservice_streams_lagged", "Subscribers that fell behind their queue (a WebSocket is sent "
            "the latest state, a Server-Sent Events stream is ended for resume), by protocol", ["protocol"], **new)
        self.feed_lag = prometheus.Gauge(
            "userservice_change_feed_lag", "Changes the change-log follower was behind the log when it last "
            "woke (the largest over the live workers)", multiprocess_mode="livemax", **new)
        self.batches = prometheus.Histogram(
            "userservice_group_commit_writes", "Writes carried by each group-commit transaction",
            buckets=BATCH_BUCKETS, **new)
        self.connections = prometheus.Gauge(
            "userservice_db_connections", "Pooled database connections, by state (in_use, waiting)",
            ["state"], multiprocess_mode="livesum", **new)
        self.tally = RequestTally(self.requests, self.latency, LATENCY_BUCKETS)
        self.flusher = None
        self.start_lock = threading.Lock()
        self.closed = threading.Event()

    def request_done(self, route, method, status, seconds):
        self.tally.add(route, method, status, seconds)
        if self.flusher is None and self.multiprocess:
            self.start_flushing()

    def start_flushing(self):
        """Other processes read this one's values from its files: keep them at most
        FLUSH_SECONDS behind (a single process's registry is read by its own scrape only,
        which flushes first)."""
        with self.start_lock:
            if self.flusher is None:
                self.flusher = threading.Thread(target=self.flush_until_closed, name="userservice-metrics",
                                                daemon=True)
                self.flusher.start()

    def flush_until_closed(self):
        while not self.closed.wait(FLUSH_SECONDS):
            self.tally.flush()

    def close(self):
        """Stop flushing, after adding what is tallied (a worker's last requests count too)."""
        self.closed.set()
        self.tally.flush()

    def stream_opened(self, protocol):
        self.streams.labels(protocol).inc()

    def stream_closed(self, protocol):
        self.streams.labels(protocol).dec()

    def stream_lagged(self, protocol):
        self.lagged.labels(protocol).inc()

    def feed_behind(self, changes):
        self.feed_lag.set(changes)

    def committed(self, writes):
        self.batches.observe(writes)

    @contextlib.contextmanager
    def waiting_for_connection(self):
        waiting = self.connections.labels("waiting")
        waiting.inc()
        try:
            yield
        finally:
            waiting.dec()

    def connection_taken(self):
        self.connections.labels("in_use").inc()

    def connection_returned(self):
        self.connections.labels("in_use").dec()

    def exposition(self):
        import prometheus_client as prometheus
        from prometheus_client import multiprocess

        self.tally.flush()
        registry = self.registry
        if self.multiprocess:
            registry = prometheus.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return prometheus.generate_latest(registry), prometheus.CONTENT_TYPE_LATEST


class Unmeasured(Metrics):
    """METRICS off: the same calls, recording nothing."""

    def __init__(self):
        pass

    def request_done(self, route, method, status, seconds):
        pass

    stream_opened = stream_closed = stream_lagged = feed_behind = committed = lambda self, value: None
    connection_taken = connection_returned = close = lambda self: None

    @contextlib.contextmanager
    def waiting_for_connection(self):
        yield


class RequestTally:
    """Requests answered since the last flush, by the labels they are counted under: a few
    dictionary updates per request, where prometheus_client takes a lock and writes a value
    three times. Thread-safe (gthread workers, `flask run`)."""

    def __init__(self, requests, latency, buckets):
        self.requests, self.latency, self.buckets = requests, latency, buckets
        self.lock = threading.Lock()
        self.counts, self.observed, self.seconds = {}, {}, {}

    def add(self, route, method, status, seconds):
        key, bucket = (route, method, status), (route, bisect.bisect_left(self.buckets, seconds))
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            self.observed[bucket] = self.observed.get(bucket, 0) + 1
            self.seconds[route] = self.seconds.get(route, 0.0) + seconds

    def flush(self):
        with self.lock:
            counts, observed, seconds = self.counts, self.observed, self.seconds
            self.counts, self.observed, self.seconds = {}, {}, {}
        for labels, count in counts.items():
            self.requests.labels(*labels).inc(count)
        for (route, bucket), count in observed.items():
            # what Histogram.observe does `count` times; prometheus_client has no public
            # call for it (tests/test_metrics.py checks the result against observe)
            self.latency.labels(route)._buckets[bucket].inc(count)
        for route, total in seconds.items():
            self.latency.labels(route)._sum.inc(total)


def for_config(config):
    return Metrics() if config["METRICS"] else Unmeasured()


@bp.get("/metrics")
def exposition():
    body, content_type = extension.current().metrics.exposition()
    return Response(body, content_type=content_type)


def start_timer():
    if serves():
        g.metrics_started = time.perf_counter()


def count_request(response):
    started = g.pop("metrics_started", None)
    if started is not None:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        extension.current().metrics.request_done(route, request.method, response.status_code,
                                                 time.perf_counter() - started)
    return response


def init_app(app):
    """Count the service's requests (when metrics are on; the caller registers `bp` then)."""
    app.before_request(start_timer)
    app.after_request(count_request)
