"""/user/stream: the current user, live, over WebSocket (flask-sock) or Server-Sent Events.

Both carry the same bytes: the current UserProfile as JSON, or `null` when nobody is signed in.

/.well-known/stream/health: the WebSocket PiecesOS clients hold open while the server runs.
"""
import functools
import re
import socket
import threading
import time

from flask import Blueprint, current_app, g, request
from flask_sock import ConnectionClosed, Sock

from .. import extension, peers, stream_sockets
from ..event_stream import EventStream, EventStreamResponse
from ..hub import CLOSED, GONE, websocket_frame
from ..stream_sockets import GOING_AWAY, GOING_AWAY_MESSAGE, MAX_CLIENT_MESSAGE

bp = Blueprint("stream", __name__)
sock = Sock()

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
        return EventStreamResponse(iter(()))
    if request.method != "GET":
        return None
    client = peers.connection(request.environ)
    websocket = request.environ.get("HTTP_UPGRADE", "").lower() == "websocket"
    owned = "gunicorn.socket" in request.environ and stream_sockets.owned(client)
    if websocket:
        # permessage-deflate costs ~90 KB per connection for frames of a few hundred bytes:
        # without the offer, simple-websocket does not negotiate it.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        for key in peers.SERVER_SOCKETS:
            if key in request.environ:
                request.environ[key] = stream_sockets.Frames(request.environ[key])
    if request.endpoint == HEALTH_STREAM:
        g.subscription = service.follower.watch(config["STREAM_MAX_SUBSCRIBERS"])
        return None
    g.owned = owned  # the connection is read and written without Werkzeug's or gunicorn's help
    beats = ("ping" if owned else None) if websocket else "sse"  # parked WebSockets' pings
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
    """Under gevent the connection is parked (parked_streams.py) and this greenlet ends;
    elsewhere this handler follows the subscription until the client leaves."""
    service, subscription = extension.current(), take_subscription()
    service.metrics.stream_opened("websocket")
    if g.pop("owned"):  # as admit decided for this connection
        park_websocket(service, ws, subscription)
    else:
        follow(service, ws, subscription)


def park_websocket(service, ws, subscription):
    ws.connected = False  # flask-sock closes `ws` after the handler: not this connection now
    try:
        sock = ws.sock.sock  # ws.sock is the Frames admit() put in the environ
        service.parked.park(sock, subscription, "websocket", websocket_frame(subscription.state))
    except OSError:  # no file descriptor left to keep it: it ends with this request
        service.hub.unsubscribe(subscription)
        service.metrics.stream_closed("websocket")


def follow(service, ws, subscription):
    """flask-sock ends a closed WebSocket (ConnectionClosed), and a write its departure broke
    (OSError) ends here, so that no error response is written to a connection that is gone."""
    hub, metrics = service.hub, service.metrics
    reader = stream_sockets.ThreadReader(ws)
    try:
        ws.send(subscription.state)
        while True:
            event = subscription.next()  # woken by a change or the client
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
            elif event is not None:
                send_frame(ws, event.websocket)
    except OSError:
        return
    finally:
        hub.unsubscribe(subscription)
        metrics.stream_closed("websocket")


@sock.route("/.well-known/stream/health", bp=bp)
def health_stream(ws):
    """`ok` at once, then every STREAM_HEARTBEAT_INTERVAL seconds, until the server stops.
    The SDK's PiecesClient reads `ok` as "PiecesOS is running" (pieces-cli's MCP gateway asks
    it before each tool call), and pieces-cli's TUI each frame as connected or not."""
    hub, watcher = extension.current().hub, take_subscription()
    reader = stream_sockets.ThreadReader(ws)
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
    """simple-websocket's reader: none for a WebSocket that will be parked (see
    parked_streams.py); else a thread that must not hold a gthread worker's exit, as it waits for
    a peer that may never answer (threading.Thread is looked up now, after gevent patched it)."""
    if g.get("owned"):
        return stream_sockets.NoThread(target)
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
    ws.close(reason=GOING_AWAY, message=GOING_AWAY_MESSAGE)
    ws.sock.shutdown(socket.SHUT_RD)


@bp.get("/user/stream")
def event_stream():
    service = extension.current()
    backlog = resume_backlog(service.change_log, g.subscription, request.headers.get("Last-Event-ID"))
    connection = peers.connection(request.environ) if g.pop("owned") else None
    service.metrics.stream_opened("sse")
    return EventStreamResponse(EventStream(service, take_subscription(), backlog, connection))


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
