"""What the service says about each request: an id (sent back as X-Request-ID and named in
problem bodies) and the access log (one line per request, secrets blanked), in the format of
log_format.py."""
import logging
import random
import re
import time
from urllib.parse import parse_qsl, urlencode

from flask import current_app, g, request

from .guards import API_KEY_PARAMETER, serves
from .log_format import make_formatter

REQUEST_ID_HEADER = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
REDACTED = "[redacted]"
access_log = logging.getLogger("userservice.access")


def start_request():
    """First of all: the request's id (the client's own, when it sent a sane one)."""
    if not serves():
        return
    g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER, ""))
    g.request_started = time.perf_counter()


def request_id(sent):
    """The id a request is answered under: the client's own `sent`, when it is sane, else 128
    random bits. Not the kernel's (a system call per request): an id correlates, it guards
    nothing, and a client may choose its own. `random` is seeded anew in every forked worker."""
    return sent if SANE_REQUEST_ID.fullmatch(sent) else "%032x" % random.getrandbits(128)


def finish_response(response):
    request_id = g.get("request_id")
    if request_id is None:
        return response
    response.headers[REQUEST_ID_HEADER] = request_id
    if current_app.config["ACCESS_LOG"]:
        line = AccessLine(response.status_code)
        if response.is_streamed:  # Server-Sent Events: the request ends when the stream does
            response.call_on_close(line.write)
        else:
            g.access_line = line
    return response


def write_access_line(_error):
    """After the view has returned (for a WebSocket: after the socket has closed)."""
    line = g.pop("access_line", None)
    if line is not None:
        line.write()


class AccessLine:
    def __init__(self, status):
        upgraded = request.headers.get("Upgrade", "").lower() == "websocket" and status == 200
        self.method, self.path, self.status = request.method, path_without_secrets(), 101 if upgraded else status
        self.request_id, self.started = g.request_id, g.request_started

    def write(self):
        milliseconds = (time.perf_counter() - self.started) * 1000
        access_log.info("%s %s %d %.1f ms id=%s", self.method, self.path, self.status, milliseconds,
                        self.request_id, extra={
                            "method": self.method, "path": self.path, "status": self.status,
                            "duration_ms": round(milliseconds, 3), "request_id": self.request_id})


def path_without_secrets():
    if not request.query_string:
        return request.path
    pairs = [(name, REDACTED if name == API_KEY_PARAMETER else value)
             for name, value in parse_qsl(request.query_string.decode("latin-1"), keep_blank_values=True)]
    return "%s?%s" % (request.path, urlencode(pairs, safe="[]"))


def init_app(app):
    """Called before the guards are, so that whatever refuses a request can name its id."""
    app.before_request(start_request)
    app.after_request(finish_response)
    app.teardown_request(write_access_line)
    if app.config["ACCESS_LOG"] and not (logging.getLogger().handlers or access_log.handlers):
        handler = logging.StreamHandler()  # `flask run`, or a site that configured no logging
        handler.setFormatter(make_formatter(app.config["LOG_FORMAT"]))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
