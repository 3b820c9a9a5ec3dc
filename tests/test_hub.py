"""hub.py: fan-out to bounded queues, lag, one event for every subscriber, shutdown."""
import pytest

from wsproto.frame_protocol import FrameProtocol

from userservice import hub
from userservice.problems import ServiceUnavailable


def test_hub_subscriber_that_falls_behind_lags_without_blocking_others():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    slow, fast = subscribers.subscribe(2, limit=10), subscribers.subscribe(2, limit=10)
    for seq in range(1, 4):
        subscribers.publish(seq, "s%d" % seq)
        assert fast.next(0) == (seq, "s%d" % seq)
    assert slow.lagging and not fast.lagging
    assert subscribers.resubscribe(slow).state == "s3"


def test_hub_close_ends_subscribers_even_with_full_queues():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    full = subscribers.subscribe(1, limit=10)
    subscribers.publish(1, "a")
    subscribers.close()
    assert full.next(0) is hub.CLOSED
    with pytest.raises(ServiceUnavailable):
        subscribers.subscribe(1, limit=10)


def test_hub_gives_every_subscriber_one_event_encoded_once():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    first, second = subscribers.subscribe(4, limit=10), subscribers.subscribe(4, limit=10)
    subscribers.publish(7, '{"id":"u"}')
    event = first.next(0)
    assert second.next(0) is event
    assert event.sse == b'id: 7\ndata: {"id":"u"}\n\n'


def test_hub_watchers_share_the_limit_get_no_changes_and_end_on_close():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    watcher = subscribers.watch(limit=2)
    subscribers.subscribe(1, limit=2)
    with pytest.raises(ServiceUnavailable):
        subscribers.watch(limit=2)
    subscribers.publish(1, "a")
    assert watcher.next(0) is None
    subscribers.unsubscribe(watcher)
    subscribers.watch(limit=2)  # its slot is free again
    subscribers.close()
    assert watcher.next(0) is None  # gone before the close
    with pytest.raises(ServiceUnavailable):
        subscribers.watch(limit=10)


def test_hub_close_ends_watchers():
    subscribers = hub.Hub()
    watcher = subscribers.watch(limit=10)
    subscribers.close()
    assert watcher.next(5) is hub.CLOSED


def test_hub_at_the_limit_frees_subscribers_whose_clients_have_gone():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    clients = {"gone": True, "there": False}
    gone = subscribers.subscribe(1, limit=2, peer_gone=lambda: clients["gone"])
    there = subscribers.subscribe(1, limit=2, peer_gone=lambda: clients["there"])
    newcomer = subscribers.subscribe(1, limit=2)
    assert gone.next(0) is hub.GONE
    assert subscribers.subscribers == {there, newcomer}
    with pytest.raises(ServiceUnavailable):  # the living are never dropped
        subscribers.subscribe(1, limit=2)
    assert there.next(0) is None and subscribers.subscribers == {there, newcomer}


def test_hub_below_the_limit_asks_no_client():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    subscribers.subscribe(1, limit=3, peer_gone=lambda: pytest.fail("asked below the limit"))
    subscribers.subscribe(1, limit=3)
    subscribers.check_room(limit=3)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_hub_websocket_frame_is_what_wsproto_sends(size):
    """The frame built once per change is byte for byte the one wsproto would build per send."""
    text = ("é" + "x" * size)[:max(size, 1)] if size else ""
    protocol = FrameProtocol(client=False, extensions=[])
    assert hub.websocket_frame(text) == protocol.send_data(text, fin=True)


def test_hub_event_carries_its_websocket_frame_once():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    first, second = subscribers.subscribe(4, limit=10), subscribers.subscribe(4, limit=10)
    subscribers.publish(3, '{"id":"é"}')
    assert first.next(0).websocket is second.next(0).websocket == hub.websocket_frame('{"id":"é"}')


def test_hub_resubscribe_keeps_the_wakeup_the_connection_sets():
    """A WebSocket's reader sets its subscription's `arrived` when the client sends or closes;
    the subscription replacing a lagging one must be woken by it too."""
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    lagging = subscribers.subscribe(1, limit=10)
    subscribers.publish(1, "a")
    subscribers.publish(2, "b")
    fresh = subscribers.resubscribe(lagging)
    assert fresh.arrived is lagging.arrived
    fresh.arrived.set()
    assert fresh.next(5) is None  # woken at once, with nothing queued


def test_hub_beat_reaches_only_subscribers_sent_heartbeats_after_their_changes():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    sse, websocket = subscribers.subscribe(4, limit=10, beats=True), subscribers.subscribe(4, limit=10)
    subscribers.publish(1, "a")
    subscribers.beat()
    assert sse.next(0).seq == 1 and sse.next(0) is hub.KEEP_ALIVE and sse.next(0) is None
    assert websocket.next(0).seq == 1 and websocket.next(0) is None
    fresh = subscribers.resubscribe(sse)
    subscribers.beat()
    assert fresh.next(0) is hub.KEEP_ALIVE


def test_hub_heartbeat_beats_every_interval_until_stopped():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    sse = subscribers.subscribe(4, limit=10, beats=True)
    heartbeat = hub.Heartbeat(subscribers, 0.05)
    heartbeat.start()
    try:
        assert sse.next(5) is hub.KEEP_ALIVE
        assert sse.next(5) is hub.KEEP_ALIVE
    finally:
        heartbeat.stop()
        heartbeat.join(5)
    assert not heartbeat.thread.is_alive()
