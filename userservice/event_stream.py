"""The body of a Server-Sent Events response on /user/stream (the view is in api/stream.py).

The body goes to the WSGI server as it is (`direct_passthrough`). Werkzeug's wrappers around
a body, its closing iterator and its encoder, would cost each event two more generator
steps, and each idle stream their frames on its greenlet's saved stack.

Under gevent and gunicorn (stream_sockets.owned) the stream answers on the socket itself:
the head as the app's hooks left it, then the events as they are, delimited by the
connection's close. It parks the connection (parked_streams.py), which sends them without a
greenlet of its own, and raises StopIteration from `__iter__`, which is how gunicorn is
told that a request was answered outside it (flask-sock tells it so for a WebSocket);
gunicorn then closes its own socket. Elsewhere the WSGI server writes what the body yields.
"""
from flask import Response

from .hub import CLOSED, GONE, KEEP_ALIVE, Event

SSE_RETRY_MS = 2000
RETRY_HINT = b"retry: %d\n\n" % SSE_RETRY_MS
KEEP_ALIVE_COMMENT = b": keep-alive\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
END = object()  # what EventStream.next_item returns once the stream is over


class EventStream:
    """The events of one subscription: its backlog, then each change and heartbeat.

    The slot is given back when the server closes the body, however it ends. The body may
    never be read (a client gone before it started), so its end cannot do it."""

    def __init__(self, service, subscription, backlog, connection=None):
        self.service, self.subscription, self.backlog = service, subscription, backlog
        self.connection = connection  # gunicorn's socket, when answering on it
        self.head = None  # the status line and headers, when answering on the connection
        self.events = None
        self.response_close = None  # the response's own close, and its callbacks (the access log)
        self.parked = False
        self.closed = False

    def __iter__(self):
        if self.connection is None or self.head is None:
            self.events = self.generate()
            return self.events
        backlog, self.backlog = self.backlog, None
        first = b"".join([self.head, RETRY_HINT] + [Event(seq, state).sse for seq, state in backlog])
        self.service.parked.park(self.connection, self.subscription, "sse", first)
        self.parked = True
        raise StopIteration("answered on the connection")

    def generate(self):
        subscription, backlog, self.backlog = self.subscription, self.backlog, None
        yield RETRY_HINT
        for seq, state in backlog:
            yield Event(seq, state).sse
        del backlog
        while (item := self.next_item(subscription)) is not END:
            if item is not None:
                yield item

    def next_item(self, subscription):
        """What to send at the next wake-up: None for nothing, END once the stream is over.
        A function, not a generator: each generator step is another frame on a stream's
        saved stack."""
        event = subscription.next()  # a change, or the hub's heartbeat (no timer of its own)
        if subscription.lagging:
            self.service.metrics.stream_lagged("sse")
        if event is CLOSED or event is GONE or subscription.lagging:
            return END  # a lagging client reconnects with Last-Event-ID and misses nothing
        return KEEP_ALIVE_COMMENT if event is KEEP_ALIVE else None if event is None else event.sse

    def close(self):
        """Once, whoever calls it first: the server, or the response's close calling it."""
        if self.closed:
            return
        self.closed = True
        if self.events is not None:
            self.events.close()
        if not self.parked:  # else the parked stream's, when it ends
            self.service.hub.unsubscribe(self.subscription)
            self.service.metrics.stream_closed("sse")
        if self.response_close is not None:
            self.response_close()


class EventStreamResponse(Response):
    """A Server-Sent Events response. Its EventStream body is given the response's close,
    which Werkzeug's closing iterator would otherwise call, and, when it answers on the
    connection, the head to write, as the app's hooks left it."""

    def __init__(self, body):
        super().__init__(body, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)

    def __call__(self, environ, start_response):
        body, status, headers = self.get_wsgi_response(environ)
        start_response(status, headers)
        if isinstance(body, EventStream):
            body.response_close = self.close
            if body.connection is not None:
                body.head = response_head(status, headers)
        return body


def response_head(status, headers):
    """The status line and headers, for a body delimited by the connection's close."""
    lines = ["HTTP/1.1 %s" % status] + ["%s: %s" % header for header in headers] + ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")
