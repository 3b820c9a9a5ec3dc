"""hub.py: fan-out to bounded queues, lag, one event for every subscriber, shutdown."""
import threading
import time

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


PATIENCE = 10  # what next() and wait_until() are given; a prompt answer takes a tiny fraction


def answers_promptly(call):
    """call() returns well before PATIENCE: it did not wait for a timeout (a thread, so a
    call that would wait for ever fails instead of hanging the suite)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(PATIENCE * 3)
    assert not thread.is_alive(), "never returned"
    assert time.monotonic() - started < PATIENCE / 2, "waited for its timeout"
    return result[0]


def subscribed(size=4):
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    return subscribers, subscribers.subscribe(size, limit=10)


def test_subscription_with_queued_events_hands_each_out_without_waiting():
    subscribers, subscription = subscribed()
    subscribers.publish(1, "a")
    subscribers.publish(2, "b")
    assert [answers_promptly(lambda: subscription.next(PATIENCE)).seq for _ in range(2)] == [1, 2]


@pytest.mark.parametrize("ending, expected", [("end", hub.CLOSED), ("drop", hub.GONE)])
def test_subscription_that_ended_says_so_at_every_call_without_waiting(ending, expected):
    _, subscription = subscribed()
    getattr(subscription, ending)()
    for _ in range(3):
        assert answers_promptly(lambda: subscription.next(PATIENCE)) is expected


def test_subscription_that_lags_says_so_at_every_call_without_waiting():
    subscribers, subscription = subscribed(size=1)
    subscribers.publish(1, "a")
    subscribers.publish(2, "b")  # does not fit: lagging
    assert answers_promptly(lambda: subscription.next(PATIENCE)).seq == 1
    for _ in range(3):
        assert answers_promptly(lambda: subscription.next(PATIENCE)) is None


def test_subscription_waits_for_an_event_published_later():
    subscribers, subscription = subscribed()
    threading.Timer(0.2, subscribers.publish, (1, "a")).start()
    assert answers_promptly(lambda: subscription.next(PATIENCE)).seq == 1


def test_subscription_and_hub_waits_end_at_their_timeout():
    subscribers, subscription = subscribed()
    assert answers_promptly(lambda: subscription.next(0.05)) is None
    assert answers_promptly(lambda: subscribers.wait_until(5, 0.05)) is False


def test_hub_resubscribed_subscriber_takes_one_slot_gets_changes_and_can_be_freed():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    gone = {"yes": False}
    lagging = subscribers.subscribe(1, limit=2, peer_gone=lambda: gone["yes"])
    subscribers.publish(1, "a")
    subscribers.publish(2, "b")
    fresh = subscribers.resubscribe(lagging)
    assert (fresh.seq, fresh.state, fresh.size) == (2, "b", 1)
    other = subscribers.subscribe(1, limit=2)  # the old subscription gave its slot back
    subscribers.publish(3, "c")
    assert fresh.next(0).seq == 3 and other.next(0).seq == 3
    gone["yes"] = True  # the resubscribed one keeps its peer check: a full hub frees it
    subscribers.unsubscribe(other)
    subscribers.subscribe(1, limit=1)
    assert fresh.next(0) is hub.GONE


@pytest.mark.parametrize("closing, detail", [
    (False, "This server holds as many streams as it may; try again shortly."),
    (True, "This server is shutting down; connect again."),
])
def test_hub_refusal_says_why_and_when_to_retry(closing, detail):
    subscribers, _ = subscribed()
    if closing:
        subscribers.close()
    with pytest.raises(ServiceUnavailable) as refused:
        subscribers.subscribe(4, limit=1)
    assert refused.value.description == detail
    assert refused.value.extra_headers == {"Retry-After": str(hub.RETRY_SECONDS)}


def test_hub_full_of_watchers_and_the_dead_frees_the_dead():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    subscribers.watch(limit=2)
    dead = subscribers.subscribe(4, limit=2, peer_gone=lambda: True)
    subscribers.subscribe(4, limit=2)  # the watcher and the dead fill the hub: the dead make room
    assert dead.next(0) is hub.GONE


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


def test_hub_beat_reaches_only_subscribers_sent_that_kind_after_their_changes():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    sse, pinged, unbeaten = (subscribers.subscribe(4, limit=10, beats=kind) for kind in ("sse", "ping", None))
    subscribers.publish(1, "a")
    subscribers.beat("sse")
    assert sse.next(0).seq == 1 and sse.next(0) is hub.KEEP_ALIVE and sse.next(0) is None
    assert pinged.next(0).seq == 1 and pinged.next(0) is None
    assert unbeaten.next(0).seq == 1 and unbeaten.next(0) is None
    subscribers.beat("ping")
    assert pinged.next(0) is hub.KEEP_ALIVE and sse.next(0) is None and unbeaten.next(0) is None
    fresh = subscribers.resubscribe(sse)
    subscribers.beat("sse")
    assert fresh.next(0) is hub.KEEP_ALIVE


def test_hub_heartbeat_beats_each_kind_at_its_interval_until_stopped():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    fast, slow = subscribers.subscribe(64, limit=10, beats="fast"), subscribers.subscribe(64, limit=10, beats="slow")
    heartbeat = hub.Heartbeat(subscribers, {"fast": 0.05, "slow": 0.5})
    heartbeat.start()
    try:
        assert slow.next(5) is hub.KEEP_ALIVE
        fast_beats = 0
        while slow.next(0) is None:  # until the second slow beat, 0.5 s later
            fast_beats += fast.next(0.01) is hub.KEEP_ALIVE
    finally:
        heartbeat.stop()
        heartbeat.join(5)
    assert not heartbeat.thread.is_alive()
    assert 7 <= fast_beats <= 13  # about ten fast beats to one slow (give or take a beat at each end)


def test_hub_beats_each_subscriber_once_per_round_of_slices_and_resubscribing_keeps_its_turn():
    subscribers = hub.Hub()
    subscribers.publish(0, "null")
    pinged = [subscribers.subscribe(4, limit=100, beats="ping") for _ in range(3 * hub.BEAT_SLICES)]
    beaten_at = {}
    for turn in range(hub.BEAT_SLICES):
        subscribers.beat("ping", turn)
        for number, subscription in enumerate(pinged):
            if subscription.next(0) is hub.KEEP_ALIVE:
                assert number not in beaten_at  # once a round
                beaten_at[number] = turn
    assert sorted(beaten_at) == list(range(len(pinged)))
    assert sorted(beaten_at.values()).count(0) == 3  # a tenth at a time
    fresh = subscribers.resubscribe(pinged[0])
    subscribers.beat("ping", beaten_at[0])
    assert fresh.next(0) is hub.KEEP_ALIVE


def test_subscription_direct_delivers_only_with_nothing_queued_and_in_order():
    """A WebSocket's publisher-side write (`direct`) is tried only while nothing waits in the
    queue: once a change had to be queued, later ones queue behind it, whatever `direct` says."""
    subscribers, delivered, taking = hub.Hub(), [], [True]

    def direct(event):
        if taking[0]:
            delivered.append(event.seq)
        return taking[0]

    subscribers.publish(0, "null")
    subscription = subscribers.subscribe(8, limit=10)
    subscription.direct = direct
    subscribers.publish(1, "a")
    assert delivered == [1] and not subscription.arrived.is_set() and subscription.next(0) is None
    taking[0] = False
    subscribers.publish(2, "b")
    taking[0] = True
    subscribers.publish(3, "c")
    assert delivered == [1] and [subscription.next(0).seq, subscription.next(0).seq] == [2, 3]
    subscribers.publish(4, "d")
    assert delivered == [1, 4]
    assert subscribers.resubscribe(subscription).direct is direct
