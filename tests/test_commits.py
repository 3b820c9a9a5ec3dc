"""Group commit: writes queued while a transaction is under way share the next one, each
in a savepoint of its own, and are answered only after it commits. On both backends."""
import datetime
import threading
import time

import pytest
from peewee import IntegrityError

from userservice import commits
from userservice.problems import Problem


@pytest.fixture
def transactions():
    """The writes each committed transaction carried: the group commit's on_commit appends it."""
    return []


@pytest.fixture
def group(service, transactions):
    """A group commit on the app's database, built with an on_commit that counts."""
    return commits.GroupCommit(service.storage, service.change_log,
                               on_commit=lambda writes, _announcement: transactions.append(writes))


@pytest.fixture
def logged(service):
    """The change log as (seq, kind), oldest first."""
    Change = service.storage.models.Change

    def read():
        with service.storage.connection():
            return list(Change.select(Change.seq, Change.kind).order_by(Change.seq).tuples())
    return read


@pytest.fixture
def state_seq(service):
    return service.change_log.last_seq


def recording(kind, fail=False):
    def job(head):
        head.record(kind, None)
        if fail:
            raise Problem(409, "%s conflicts" % kind)
        return head.seq
    return job


def run_queued(app, group, jobs, catch=Exception):
    """Queue every job while the turn is held, then let them go: one transaction takes all."""
    outcomes = {}

    def writer(name, job):
        with app.app_context():
            try:
                outcomes[name] = group.run(job)
            except catch as error:
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


def test_group_commit_queued_writes_share_one_transaction(app, group, transactions, logged, state_seq):
    outcomes = run_queued(app, group, {name: recording(name) for name in ("a", "b", "c")})
    assert len(transactions) == 1
    assert sorted(outcomes.values()) == [1, 2, 3]
    assert sorted(kind for _, kind in logged()) == ["a", "b", "c"]
    assert state_seq() == 3


def test_group_commit_failed_job_leaves_the_others_in_the_batch_committed(app, group, transactions, logged, state_seq):
    jobs = {"a": recording("a"), "bad": recording("bad", fail=True), "c": recording("c")}
    outcomes = run_queued(app, group, jobs)
    assert len(transactions) == 1
    assert isinstance(outcomes["bad"], Problem) and outcomes["bad"].code == 409
    assert sorted(kind for _, kind in logged()) == ["a", "c"]
    assert [seq for seq, _ in logged()] == [1, 2]  # the failed job's seq was not used
    assert sorted((outcomes["a"], outcomes["c"])) == [1, 2] and state_seq() == 2


def test_group_commit_lone_failed_job_writes_nothing(app, group, transactions, logged, state_seq):
    with pytest.raises(Problem):
        group.run(recording("bad", fail=True))
    assert transactions == [] and logged() == [] and state_seq() == 0


def test_group_commit_transaction_that_fails_fails_every_job_and_writes_nothing(app, group, transactions, logged, state_seq):
    def ends_the_transaction(head):
        group.storage.database.execute_sql("ROLLBACK")  # so its savepoint cannot be released

    outcomes = run_queued(app, group, {"a": recording("a"), "breaks": ends_the_transaction,
                                       "b": recording("b")})
    assert all(isinstance(outcome, Exception) for outcome in outcomes.values()), outcomes
    assert transactions == [] and logged() == [] and state_seq() == 0


def test_group_commit_many_threads_every_write_once_and_in_seq_order(app, group, logged):
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


def test_group_commit_job_that_breaks_a_unique_index_is_a_409_naming_the_conflict(app, group, logged):
    User = group.storage.models.User

    def duplicate_user(head):
        head.record("dup", None)
        for _ in range(2):
            User.insert(id="twin", document="{}", signed_in=datetime.datetime(2026, 1, 1)).execute()

    with pytest.raises(Problem) as raised:
        group.run(duplicate_user)
    assert raised.value.code == 409
    assert raised.value.description == "The change conflicts with another user's data."
    assert isinstance(raised.value.__cause__, IntegrityError)  # the database's own words, for the log
    assert logged() == []


def test_group_commit_batch_of_two_with_one_failure_commits_the_other(app, group, transactions, logged):
    outcomes = run_queued(app, group, {"a": recording("a"), "bad": recording("bad", fail=True)})
    assert len(transactions) == 1
    assert outcomes["a"] == 1 and isinstance(outcomes["bad"], Problem)
    assert logged() == [(1, "a")]


def test_group_commit_interrupted_transaction_answers_the_others_503_and_writes_nothing(app, group, logged, state_seq):
    def interrupted(head):
        head.record("interrupted", None)
        raise KeyboardInterrupt  # as a worker's greenlet killed mid-write is (GreenletExit)

    outcomes = run_queued(app, group, {"a": recording("a"), "stop": interrupted, "b": recording("b")},
                          catch=BaseException)
    interruptions = [outcome for outcome in outcomes.values() if isinstance(outcome, KeyboardInterrupt)]
    refusals = [outcome for outcome in outcomes.values() if isinstance(outcome, Problem)]
    assert len(interruptions) == 1 and len(refusals) == 2  # the leader's thread was interrupted
    assert {(refusal.code, refusal.description) for refusal in refusals} == {
        (503, "The write was interrupted; nothing was written.")}
    assert logged() == [] and state_seq() == 0


def test_group_commit_change_names_the_user_it_changed(app, group, service):
    def change_of_user(head):
        head.record("select", "user-7")

    group.run(change_of_user)
    Change = service.storage.models.Change
    with service.storage.connection():
        assert list(Change.select(Change.kind, Change.user).tuples()) == [("select", "user-7")]


def test_commit_counter_moves_after_every_sqlite_commit(sqlite_url):
    from userservice import create_app
    from conftest import discard, parts

    app = create_app({"DATABASE_URL": sqlite_url})
    try:
        service = parts(app)
        before = service.storage.commit_marker()
        service.commits.run(recording("a"))
        after = service.storage.commit_marker()
        assert after == before + 1
    finally:
        discard(app)
