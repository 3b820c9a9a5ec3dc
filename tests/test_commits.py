"""Group commit: writes queued while a transaction is under way share the next one, each
in a savepoint of its own, and are answered only after it commits. On both backends."""
import threading
import time

import pytest

from userservice import commits, db
from userservice.db import database
from userservice.errors import Problem
from userservice.models import Change, State


@pytest.fixture
def group(app):
    with app.app_context():
        yield app.extensions["userservice.commits"]


@pytest.fixture
def transactions(monkeypatch):
    """How many transactions committed: commits.on_commit is called once after each."""
    committed = []
    monkeypatch.setattr(commits, "on_commit", lambda: committed.append(True))
    return committed


def logged():
    with database.connection_context():
        return list(Change.select(Change.seq, Change.kind).order_by(Change.seq).tuples())


def state_seq():
    with database.connection_context():
        return State.get(State.id == 1).seq


def recording(kind, fail=False):
    def job(state):
        commits.record(state, kind, None)
        if fail:
            raise Problem(409, "%s conflicts" % kind)
        return state.seq
    return job


def run_queued(app, group, jobs):
    """Queue every job while the turn is held, then let them go: one transaction takes all."""
    outcomes = {}

    def writer(name, job):
        with app.app_context():
            try:
                outcomes[name] = group.run(job)
            except Exception as error:
                outcomes[name] = error

    threads = [threading.Thread(target=writer, args=item) for item in jobs.items()]
    with group.turn:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while len(group.queue) < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.001)
    for thread in threads:
        thread.join(10)
    return outcomes


def test_group_commit_queued_writes_share_one_transaction(app, group, transactions):
    outcomes = run_queued(app, group, {name: recording(name) for name in ("a", "b", "c")})
    assert len(transactions) == 1
    assert sorted(outcomes.values()) == [1, 2, 3]
    assert sorted(kind for _, kind in logged()) == ["a", "b", "c"]
    assert state_seq() == 3


def test_group_commit_failed_job_leaves_the_others_in_the_batch_committed(app, group, transactions):
    jobs = {"a": recording("a"), "bad": recording("bad", fail=True), "c": recording("c")}
    outcomes = run_queued(app, group, jobs)
    assert len(transactions) == 1
    assert isinstance(outcomes["bad"], Problem) and outcomes["bad"].code == 409
    assert sorted(kind for _, kind in logged()) == ["a", "c"]
    assert [seq for seq, _ in logged()] == [1, 2]  # the failed job's seq was not used
    assert sorted((outcomes["a"], outcomes["c"])) == [1, 2] and state_seq() == 2


def test_group_commit_lone_failed_job_writes_nothing(app, group, transactions):
    with pytest.raises(Problem):
        group.run(recording("bad", fail=True))
    assert transactions == [] and logged() == [] and state_seq() == 0


def test_group_commit_transaction_that_fails_fails_every_job_and_writes_nothing(app, group, transactions):
    def ends_the_transaction(state):
        database.execute_sql("ROLLBACK")  # so its savepoint cannot be released

    outcomes = run_queued(app, group, {"a": recording("a"), "breaks": ends_the_transaction,
                                       "b": recording("b")})
    assert all(isinstance(outcome, Exception) for outcome in outcomes.values()), outcomes
    assert transactions == [] and logged() == [] and state_seq() == 0


def test_group_commit_many_threads_every_write_once_and_in_seq_order(app, group):
    writers, each = 8, 25
    results = []

    def writer(number):
        with app.app_context():
            for step in range(each):
                results.append(group.run(recording("w%d-%d" % (number, step))))

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == list(range(1, writers * each + 1))
    log = logged()
    assert [seq for seq, _ in log] == list(range(1, writers * each + 1))
    for number in range(writers):  # each writer's changes are in the order it made them
        mine = [kind for _, kind in log if kind.startswith("w%d-" % number)]
        assert mine == ["w%d-%d" % (number, step) for step in range(each)]


def test_commit_counter_moves_after_every_sqlite_commit(sqlite_url):
    from userservice import create_app
    from conftest import discard

    app = create_app({"DATABASE_URL": sqlite_url})
    try:
        with app.app_context():
            before = db.commit_marker()
            app.extensions["userservice.commits"].run(recording("a"))
            after = db.commit_marker()
        assert after == before + 1
    finally:
        discard(app)
