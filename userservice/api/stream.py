"""/user/stream: the current user, live, over WebSocket (flask-sock) or Server-Sent Events.

Both carry the same bytes: the current UserProfile as JSON, or `null` when nobody is signed in.
"""
from flask import Blueprint, Response, current_app, request
from flask_sock import Sock

from .. import store, stream
from ..errors import Problem

bp = Blueprint("stream", __name__)
sock = Sock()

SSE_RETRY_MS = 2000
WS_POLL_SECONDS = 1.0  # how soon a handler notices its WebSocket has closed


@bp.before_request
def admit():
    """Refuse a subscriber beyond the limit with 503 before any WebSocket handshake."""
    if stream.feed().hub.count() >= current_app.config["STREAM_MAX_SUBSCRIBERS"]:
        raise Problem(503, "This server holds as many streams as it may; try again shortly.",
                      headers={"Retry-After": "5"})


@sock.route("/user/stream", bp=bp)
def websocket_stream(ws):
    hub, subscription = stream.feed().hub, stream.subscribe()
    try:
        ws.send(subscription.state)
        while ws.connected:
            if subscription.lagging:
                subscription = resubscribe(hub, subscription)
                ws.send(subscription.state)
            event = subscription.next(WS_POLL_SECONDS)
            if event is stream.CLOSED:
                break
            if event is not None:
                ws.send(event[1])
    finally:
        hub.unsubscribe(subscription)


def resubscribe(hub, subscription):
    """A subscriber that fell behind skips to the latest state instead of blocking others."""
    hub.unsubscribe(subscription)
    return hub.subscribe(current_app.config["STREAM_QUEUE_SIZE"])


@bp.get("/user/stream")
def event_stream():
    hub, subscription = stream.feed().hub, stream.subscribe()
    heartbeat = current_app.config["STREAM_HEARTBEAT_INTERVAL"]
    backlog = resume_backlog(subscription, request.headers.get("Last-Event-ID"))

    def events():
        try:
            yield "retry: %d\n\n" % SSE_RETRY_MS
            for seq, state in backlog:
                yield "id: %d\ndata: %s\n\n" % (seq, state)
            while not subscription.lagging:
                event = subscription.next(heartbeat)
                if event is stream.CLOSED:
                    return
                yield ": keep-alive\n\n" if event is None else "id: %d\ndata: %s\n\n" % event
        finally:
            hub.unsubscribe(subscription)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(events(), mimetype="text/event-stream", headers=headers)


def resume_backlog(subscription, last_event_id):
    """What a client must see before going live: the changes it missed since its last id,
    or the current state when it has no id or its id is older than the log still keeps."""
    start = (subscription.seq, subscription.state)
    if last_event_id is None or not last_event_id.strip().isdigit():
        return [start]
    last = int(last_event_id)
    if last >= subscription.seq:
        return []
    _seq, oldest, _state = store.log_position()
    if oldest is None or last < oldest - 1:
        return [start]
    return store.changes_after(last, up_to=subscription.seq)


def init_app(app):
    sock.init_app(app)
