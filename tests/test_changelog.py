"""changelog.py: what wakes a follower on each backend, the PostgreSQL listener, pruning,
and a follower that reads the log at (or past) the edge of what was pruned."""
import threading
from urllib.parse import unquote

import pytest

from userservice import changelog, create_app, hub
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
    with service.change_log.waiter(wakeup, poll_interval=600) as wait:
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
    with postgres_service.change_log.waiter(threading.Event(), poll_interval=600) as wait:
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
    name = changelog.listener_params(postgres_service.storage.database)["application_name"]
    with postgres_service.change_log.waiter(threading.Event(), poll_interval=600) as wait:
        wait()
        killed = listener_pids(name)
        assert len(killed) == 1
        terminate(killed)
        assert wait_in_thread(wait)  # the lost connection: reconnects, then asks for a re-read
        assert listener_pids(name) and listener_pids(name) != killed
        notify(postgres_url)
        assert wait_in_thread(wait)


def test_listener_params_keep_the_pool_options_and_name_the_connection(postgres_service):
    params = changelog.listener_params(postgres_service.storage.database)
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

