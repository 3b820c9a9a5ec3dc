"""/user/stream: the current user, live, over WebSocket (flask-sock) or Server-Sent Events.

Both carry the same bytes: the current UserProfile as JSON, or `null` when nobody is signed in.

/.well-known/stream/health: the WebSocket PiecesOS clients hold open while the server runs.
"""
import functools
import re
import socket
import threading
import time

from flask import Blueprint, Response, current_app, g, request
from flask_sock import ConnectionClosed, Sock

from .. import extension, peers, websockets
from ..hub import CLOSED, GONE, KEEP_ALIVE, Event

bp = Blueprint("stream", __name__)
sock = Sock()

SSE_RETRY_MS = 2000
KEEP_ALIVE_COMMENT = b": keep-alive\n\n"
RETRY_HINT = b"retry: %d\n\n" % SSE_RETRY_MS
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
GOING_AWAY = 1001  # the WebSocket close code for a server shutting down
MAX_CLIENT_MESSAGE = 64 * 1024  # clients send nothing; a larger message closes their WebSocket
LAST_EVENT_ID = re.compile(r"[0-9]{1,19}")  # a seq, as the int64 column holds it
HEALTHY = "ok"  # what PiecesOS sends on its health stream, and what its clients look for
HEALTH_STREAM = "stream.health_stream"


@bp.before_request
def admit():
    """Subscribe before any WebSocket handshake, so a full or stopping server answers 503
    with Retry-After instead of accepting a connection it cannot serve. HEAD is answered
    here, with the headers a GET would get, subscribing to nothing; other methods (OPTIONS,
    or one the path refuses with 405) subscribe to nothing either."""
    service, config = extension.current(), current_app.config
    if request.method == "HEAD":
        service.hub.check_room(config["STREAM_MAX_SUBSCRIBERS"])
        return event_stream_response(iter(()))
    if request.method != "GET":
        return None
    client = peers.connection(request.environ)
    websocket = request.environ.get("HTTP_UPGRADE", "").lower() == "websocket"
    if websocket:
        # permessage-deflate costs ~90 KB per connection for frames of a few hundred bytes:
        # without the offer, simple-websocket does not negotiate it.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        for key in peers.SERVER_SOCKETS:
            if key in request.environ:
                request.environ[key] = websockets.Frames(request.environ[key])
    if request.endpoint == HEALTH_STREAM:
        g.subscription = service.follower.watch(config["STREAM_MAX_SUBSCRIBERS"])
        return None
    g.reads_itself = websocket and websockets.reads_itself(client)
    beats = "ping" if g.reads_itself else None if websocket else "sse"
    g.subscription = service.follower.subscribe(config["STREAM_QUEUE_SIZE"], config["STREAM_MAX_SUBSCRIBERS"],
                                                functools.partial(peers.gone, client), beats)
    return None



@bp.teardown_request
def release(_error):
    """A subscription no handler took (the handshake failed) must not count against the limit."""
    subscription = g.pop("subscription", None)
    if subscription is not None:
        extension.current().hub.unsubscribe(subscription)


def take_subscription():
    return g.pop("subscription")


@sock.route("/user/stream", bp=bp)
def websocket_stream(ws):
    """A client that goes away ends this quietly: flask-sock ends a closed WebSocket
    (ConnectionClosed), and a write its departure broke (OSError) ends here, so that
    no error response is written to a connection that is gone."""
    service, subscription = extension.current(), take_subscription()
    hub, metrics = service.hub, service.metrics
    reader = client_reader(ws, subscription)
    metrics.stream_opened("websocket")
    try:
        ws.send(subscription.state)
        if g.pop("reads_itself"):
            subscription.direct = ws.sock.publisher_side(subscription.arrived)
        while True:
            event = subscription.next()  # woken by a change, a beat or the client
            if event is GONE:
                return
            if event is CLOSED:
                going_away(ws)
                return
            reader.read()
            if subscription.lagging:
                metrics.stream_lagged("websocket")
                subscription = hub.resubscribe(subscription)
                ws.send(subscription.state)
            elif event is KEEP_ALIVE:
                reader.ping()
            else:  # what a partial write from the publisher left goes first (websockets.Frames)
                send_frame(ws, b"" if event is None else event.websocket)
    except OSError:
        return
    finally:
        reader.close()
        hub.unsubscribe(subscription)
        metrics.stream_closed("websocket")


def client_reader(ws, subscription):
    if isinstance(ws.thread, websockets.NoThread):
        return websockets.OwnReader(ws, subscription.arrived, MAX_CLIENT_MESSAGE)
    return websockets.ThreadReader(ws)


@sock.route("/.well-known/stream/health", bp=bp)
def health_stream(ws):
    """`ok` at once, then every STREAM_HEARTBEAT_INTERVAL seconds, until the server stops.
    The SDK's PiecesClient reads `ok` as "PiecesOS is running" (pieces-cli's MCP gateway asks
    it before each tool call), and pieces-cli's TUI each frame as connected or not."""
    hub, watcher = extension.current().hub, take_subscription()
    reader = websockets.ThreadReader(ws)
    interval = current_app.config["STREAM_HEARTBEAT_INTERVAL"]
    try:
        while True:
            ws.send(HEALTHY)
            deadline = time.monotonic() + interval
            while (remaining := deadline - time.monotonic()) > 0:
                if watcher.next(remaining) is CLOSED:
                    going_away(ws)
                    return
                reader.read()
    except OSError:
        return
    finally:
        hub.unsubscribe(watcher)


def send_frame(ws, frame):
    """simple-websocket's `send` with the frame already built (hub.Event: once per change for
    every subscriber). wsproto keeps no state of whole messages sent, so it is not asked."""
    if not ws.connected:
        raise ConnectionClosed(ws.close_reason, ws.close_message)
    ws.sock.send(frame)


def reader_thread(target):
    """simple-websocket's reader: none where the handler reads its client itself (see
    websockets.py); else a thread that must not hold a gthread worker's exit, as it waits for
    a peer that may never answer (threading.Thread is looked up now, after gevent patched it)."""
    if g.get("reads_itself"):
        return websockets.NoThread(target)
    return threading.Thread(target=target, daemon=True)


def wake_on_client():
    """simple-websocket's event, set by its reader when the client sends a message or closes:
    a subscriber's is its subscription's own, so that its handler sleeps until a change or
    its client wakes it, with no timer of its own (a 1 s poll per subscriber cost a worker
    about 40 ms of CPU a second per thousand idle WebSockets)."""
    subscription = g.get("subscription")
    return threading.Event() if subscription is None else subscription.arrived


def going_away(ws):
    """Close with 1001 and stop reading: the connection's reader thread would otherwise wait
    for a reply that a gone client never sends, and keep a gthread worker from exiting."""
    ws.close(reason=GOING_AWAY, message="The server is shutting down; connect again.")
    ws.sock.shutdown(socket.SHUT_RD)


@bp.get("/user/stream")
def event_stream():
    service = extension.current()
    backlog = resume_backlog(service.change_log, g.subscription, request.headers.get("Last-Event-ID"))
    service.metrics.stream_opened("sse")
    return event_stream_response(EventStream(service, take_subscription(), backlog))


class EventStream:
    """The body of a Server-Sent Events response, handed to the WSGI server as it is.

    The slot is given back when the server closes the body, however it ends. The body may
    never be read (a client gone before it started), so its end cannot do it. Werkzeug's
    wrappers around a body (its ClosingIterator, its encoder) would cost each event two more
    generator steps, and each idle stream their frames on its greenlet's saved stack."""

    def __init__(self, service, subscription, backlog):
        self.service, self.subscription, self.backlog = service, subscription, backlog
        self.events = None

    def __iter__(self):
        self.events = self.generate()
        return self.events

    def generate(self):
        subscription, backlog, self.backlog = self.subscription, self.backlog, None
        yield RETRY_HINT
        for seq, state in backlog:
            yield Event(seq, state).sse
        del backlog
        while True:
            event = subscription.next()  # a change, or the hub's heartbeat (no timer of its own)
            if subscription.lagging:
                self.service.metrics.stream_lagged("sse")
            if event is CLOSED or event is GONE or subscription.lagging:
                return  # a lagging client reconnects with Last-Event-ID and misses nothing
            if event is KEEP_ALIVE:
                yield KEEP_ALIVE_COMMENT
            elif event is not None:
                yield event.sse

    def close(self):
        if self.events is not None:
            self.events.close()
        self.service.hub.unsubscribe(self.subscription)
        self.service.metrics.stream_closed("sse")


def event_stream_response(body):
    """`direct_passthrough`: the body's items are bytes already (see EventStream)."""
    return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)


def resume_backlog(change_log, subscription, last_event_id):
    """What a client must see before going live: the changes it missed since its last id,
    or the current state when it has no usable id (anything but a plain ASCII decimal) or
    its id is older than the log keeps or newer than this database gave out."""
    start = [(subscription.seq, subscription.state)]
    if last_event_id is None or not LAST_EVENT_ID.fullmatch(last_event_id.strip(" \t")):
        return start
    last = int(last_event_id)
    if last == subscription.seq:
        return []
    if last > subscription.seq:  # not an id this database gave out
        return start
    backlog = change_log.read_after(last, up_to=subscription.seq)
    return backlog.changes if backlog.complete else start


def init_app(app):
    """The WebSocket server's options. The routes are on the blueprint, so the Sock object
    needs no app of its own (its init_app would keep the last app in a module global)."""
    app.config.setdefault("SOCK_SERVER_OPTIONS", {
        "ping_interval": app.config["STREAM_PING_INTERVAL"],
        "max_message_size": MAX_CLIENT_MESSAGE,
        "thread_class": reader_thread,
        "event_class": wake_on_client,
    })
