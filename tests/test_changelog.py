"""changelog.py: what wakes a follower on each backend, the PostgreSQL listener, pruning,
a follower that reads the log at (or past) the edge of what was pruned, and one that follows
announcements however they arrive."""
import threading
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from userservice import changelog, create_app, hub, listener
from conftest import discard, parts, postgres_connection

WAIT_GUARD_SECONDS = 20  # far beyond any wake-up, far below the waits used to catch a miss


def wait_in_thread(wait):
    """Run one wait() in a thread; returns whether it returned within the guard."""
    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(WAIT_GUARD_SECONDS)
    return not thread.is_alive()


def test_change_waiter_returns_on_local_wakeup(service):
    wakeup = threading.Event()
    with service.change_log.waiter(wakeup, poll_interval=600) as (wait, _announced):
        if not service.storage.is_sqlite:
            wait()  # the first wait returns once LISTEN is in place
        wakeup.set()
        assert wait_in_thread(wait)
        assert not wakeup.is_set()


def notify(postgres_url):
    with postgres_connection() as connection:
        connection.execute("SELECT pg_notify(%s, '1')", (changelog.NOTIFY_CHANNEL,))


def schema_of(postgres_url):
    return unquote(postgres_url).rpartition("search_path=")[2]


@pytest.fixture
def postgres_service(postgres_url):
    """An app whose connections are named after its schema, so that killing its listener
    leaves other tests' listeners alone."""
    url = "%s&application_name=%s" % (postgres_url, schema_of(postgres_url))
    app = create_app({"TESTING": True, "DATABASE_URL": url})
    yield parts(app)
    discard(app)


def test_change_waiter_wakes_on_notify_from_another_connection(postgres_service, postgres_url):
    with postgres_service.change_log.waiter(threading.Event(), poll_interval=600) as (wait, _announced):
        wait()
        notify(postgres_url)
        assert wait_in_thread(wait)


def listener_pids(application_name):
    with postgres_connection() as connection:
        return [pid for (pid,) in connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,))]


def terminate(pids):
    with postgres_connection() as connection:
        for pid in pids:
            connection.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_change_waiter_reconnects_after_its_connection_is_killed(postgres_service, postgres_url):
    name = listener.listener_params(postgres_service.storage.direct_url)["application_name"]
    with postgres_service.change_log.waiter(threading.Event(), poll_interval=600) as (wait, _announced):
        wait()
        killed = listener_pids(name)
        assert len(killed) == 1
        terminate(killed)
        assert wait_in_thread(wait)  # the lost connection: reconnects, then asks for a re-read
        assert listener_pids(name) and listener_pids(name) != killed
        notify(postgres_url)
        assert wait_in_thread(wait)


def test_listener_params_keep_the_pool_options_and_name_the_connection(postgres_service):
    params = listener.listener_params(postgres_service.storage.direct_url)
    assert params["options"].startswith("-c search_path=test_")
    assert params["application_name"].endswith("-listener")
    assert params["autocommit"] is True


# --- pruning, and a follower at the edge of what was pruned ----------------------------------


@pytest.fixture
def short_log(app_config):
    app_config.update(CHANGE_LOG_KEEP=3)


def make_changes(client, count):
    """A selected user, then `count` updates of it: every change is streamed."""
    profile = client.post("/user/select", json={"user_id": "auth0|1"}).get_json()
    for number in range(count):
        response = client.post("/user/update", json={**profile, "username": "name-%d" % number})
        assert response.status_code == 200, response.get_data(as_text=True)


def current_event(client, service):
    """(seq, state JSON) of the last change, as a subscriber must receive it."""
    body = client.get("/user").get_data(as_text=True)
    return service.change_log.last_seq(), "null" if body == "{}" else body[len('{"user":'):-1]


def test_log_is_pruned_to_change_log_keep(short_log, client, service):
    make_changes(client, 10)
    last, oldest, _state = service.change_log.position()
    assert last - oldest < 3 + 3  # pruned every `keep` changes


@pytest.fixture
def keep_ten(app_config):
    app_config.update(CHANGE_LOG_KEEP=10)


def test_change_log_is_pruned_to_change_log_keep_in_steps_of_prune_every(keep_ten, client, service):
    make_changes(client, changelog.PRUNE_EVERY)
    Change = service.storage.models.Change
    with service.storage.connection():
        seqs = [seq for (seq,) in Change.select(Change.seq).order_by(Change.seq).tuples()]
    assert seqs == list(range(changelog.PRUNE_EVERY - 9, changelog.PRUNE_EVERY + 2))


def drain(subscription):
    events = []
    while (event := subscription.next(0)) is not None:
        events.append(event)
    return events


def test_follower_behind_a_pruned_log_announces_the_current_state(short_log, client, service):
    make_changes(client, 10)
    follower = changelog.Follower(service.change_log, hub.Hub(), poll_interval=0.01,
                                  metrics=service.metrics)
    follower.catch_up()
    behind = follower.hub.subscribe(64, limit=10)
    follower.seq = 1  # as if this process had slept through the pruned changes
    make_changes(client, 1)
    follower.catch_up()
    assert behind.next(0) == current_event(client, service)


@pytest.mark.parametrize("behind, announces_current_state", [(1, False), (2, True)])
def test_follower_at_the_edge_of_a_pruned_log(short_log, client, service, behind, announces_current_state):
    make_changes(client, 10)
    last, oldest, _state = service.change_log.position()
    assert 1 < oldest < last
    follower = changelog.Follower(service.change_log, hub.Hub(), poll_interval=0.01,
                                  metrics=service.metrics)
    follower.catch_up()
    subscription = follower.hub.subscribe(64, limit=10)
    follower.seq = oldest - behind  # as if this process had read the log up to there
    follower.catch_up()
    expected = [last] if announces_current_state else list(range(oldest, last + 1))
    assert [event.seq for event in drain(subscription)] == expected


def test_change_log_read_after_gives_the_streamed_changes_in_the_range_oldest_first(client, service):
    make_changes(client, 4)  # seqs 1 (select) to 5
    user_id = client.get("/user").get_json()["user"]["id"]
    stored = client.get("/users/%s" % user_id).get_data(as_text=True)
    make_changes(client, 1)  # 6 (the select again) and 7: past up_to
    backlog = service.change_log.read_after(2, up_to=5)
    assert [seq for seq, _ in backlog.changes] == [3, 4, 5]
    assert backlog.changes[-1][1] == stored
    assert backlog.complete


def test_follower_that_is_not_following_refuses_new_subscribers_with_a_503(client, service):
    make_changes(client, 1)
    follower = changelog.Follower(service.change_log, hub.Hub(), poll_interval=0.01,
                                  metrics=service.metrics)
    follower.stop()  # it reads nothing from now on: the committed changes are never reached
    outcome = []

    def subscribe():
        try:
            follower.subscribe(64, limit=10, peer_gone=hub.never_gone)
        except Exception as error:
            outcome.append(error)

    assert wait_in_thread(subscribe), "waited for ever instead of refusing"
    [refusal] = outcome
    assert refusal.code == 503 and refusal.extra_headers == {"Retry-After": str(changelog.RETRY_SECONDS)}
    assert refusal.description == "The change feed is not following the database; try again shortly."


def test_follower_reports_how_far_behind_the_log_it_was(client, service):
    from userservice.metrics import Metrics

    counted = Metrics()
    client.post("/user/select", json={"user_id": "auth0|0"})  # a log that does not start at 0
    follower = changelog.Follower(service.change_log, hub.Hub(), poll_interval=0.01, metrics=counted)
    follower.catch_up()  # starts from the current state
    make_changes(client, 2)  # three changes: the select and two updates
    follower.catch_up()
    assert counted.registry.get_sample_value("userservice_change_feed_lag") == 3
    follower.catch_up()
    assert counted.registry.get_sample_value("userservice_change_feed_lag") == 0


def test_follower_runs_on_a_named_daemon_thread(service):
    """A daemon, so that a process exits without waiting for its feed; named, so that a
    profile or a thread dump says what it is."""
    service.follower.ensure_started()
    assert service.follower.thread.daemon
    assert service.follower.thread.name == "userservice-feed"


# --- announcements: commits that streamed nothing are followed without reading the log -------


def announced_follower(service):
    """A follower that has read the log, and now follows announcements only."""
    follower = changelog.Follower(service.change_log, hub.Hub(), poll_interval=0.01, metrics=service.metrics)
    follower.catch_up()
    follower.must_read = False
    return follower


def test_announcement_payload_round_trips_and_anything_else_asks_for_a_read():
    announcement = listener.Announcement(5, 9, True)
    assert listener.Announcement.parse(announcement.payload()) == announcement
    assert listener.Announcement.parse(announcement.payload().encode()) == announcement
    assert listener.Announcement.parse(b"*") is None and listener.Announcement.parse("17") is None


def test_follower_moves_past_announced_commits_that_streamed_nothing_without_reading(client, service):
    make_changes(client, 2)
    follower = announced_follower(service)
    start = follower.seq
    follower.wake(listener.Announcement(start + 1, start + 3, False))
    follower.wake(listener.Announcement(start + 4, start + 4, False))
    follower.catch_up()
    # Nothing was written: a read of the log would have left it at `start`.
    assert follower.seq == start + 4 and follower.hub.wait_until(start + 4, 0)
    assert not follower.announced


@pytest.mark.parametrize("announcement", [
    listener.Announcement(2, 2, False),  # a gap: the follower missed a commit
    listener.Announcement(1, 1, True),  # a streamed change: its state is in the log
])
def test_follower_reads_the_log_at_a_gap_or_a_streamed_change(client, service, announcement):
    make_changes(client, 2)
    follower = announced_follower(service)
    subscription = follower.hub.subscribe(64, limit=10)
    start = follower.seq
    make_changes(client, 1)  # a select (no change: the same user) and an update
    follower.wake(listener.Announcement(start + announcement.first, start + announcement.last,
                                         announcement.streamed))
    follower.catch_up()
    assert follower.seq == service.change_log.last_seq() > start
    assert drain(subscription)[-1] == current_event(client, service)


def test_follower_reads_the_log_after_an_unannounced_wake(client, service):
    make_changes(client, 2)
    follower = announced_follower(service)
    make_changes(client, 1)
    follower.wake()
    follower.catch_up()
    assert follower.seq == service.change_log.last_seq()


@pytest.fixture
def announced_changes(client, service):
    """Updates of the current user (streamed) and of another (not), and the announcements
    their commits made, as the relay delivers them: (log position before, announcements)."""
    other = client.post("/user/select", json={"user_id": "auth0|other"}).get_json()
    current = client.post("/user/select", json={"user_id": "auth0|current"}).get_json()
    start = service.change_log.last_seq()
    service.follower.announced.clear()  # the app's own follower is not running: it only collects
    for number in range(12):
        profile = current if number % 3 == 0 else other
        response = client.post("/user/update", json={**profile, "username": "u%d-%d" % (number, len(profile))})
        assert response.status_code == 200
    return start, list(service.follower.announced)


@given(deliveries=st.lists(st.tuples(st.integers(0, 11), st.booleans()), max_size=30))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_follower_publishes_every_streamed_change_once_in_order_however_announcements_arrive(
        service, announced_changes, deliveries):
    """Announcements dropped, repeated or out of order, with catch-ups anywhere between them:
    once the last one (or a reconnection) arrives, the follower has published exactly the
    streamed changes of the log, each once, in order. The log stays the source of truth."""
    start, announcements = announced_changes
    follower = changelog.Follower(service.change_log, hub.Hub(), poll_interval=0.01, metrics=service.metrics)
    follower.catch_up()
    follower.seq, follower.must_read = start, False  # as if it had read the log up to `start`
    subscription = follower.hub.subscribe(64, limit=10)
    for index, catch_up in deliveries:
        follower.wake(announcements[index % len(announcements)])
        if catch_up:
            follower.catch_up()
    follower.wake(announcements[-1])
    follower.catch_up()
    last = service.change_log.last_seq()
    expected = service.change_log.read_after(start, up_to=last).changes
    assert follower.seq == last
    assert [(event.seq, event.state) for event in drain(subscription)] == expected



@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL has no counter
def test_follower_on_sqlite_polls_the_commit_counter_not_the_database(service, other_process, monkeypatch):
    """An idle poll costs a memory read; a commit by any process is read at the next poll."""
    follower = changelog.Follower(service.change_log, hub.Hub(), poll_interval=0.01, metrics=service.metrics)
    follower.catch_up()
    subscription = follower.hub.subscribe(64, limit=10)
    with monkeypatch.context() as patched:
        patched.setattr(service.storage.statements.last_seq, "scalar",
                        lambda *args, **kwargs: pytest.fail("an idle poll read the log"))
        for _ in range(3):
            follower.catch_up()
    other_process("auth0|elsewhere")
    follower.catch_up()
    assert '"auth0|elsewhere"' in drain(subscription)[-1].state

