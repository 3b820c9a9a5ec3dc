"""Group commit: the writes waiting in one process share one transaction and one flush.

Every write locks the single state row, so writes commit one at a time, in the order of
their change-log `seq`. Rather than each paying for BEGIN, the state row, COMMIT and a
flush to disk on its own, the writes that arrive while a transaction is under way wait
for the next one, which carries them all, each in a savepoint of its own so that one that
fails leaves the others intact. A write is answered only after its transaction committed.
"""
import datetime
import threading
import time

from flask import current_app
from peewee import IntegrityError

from . import db
from .db import database
from .errors import Problem

PRUNE_EVERY = 100

# The statements every write runs, compiled once instead of by Peewee's query builder, which
# costs more than SQLite takes to run them; identifiers quoted as both backends accept.
LOCK_STATE_SQL = 'SELECT "seq", "current" FROM "state" WHERE "id" = 1'
SAVE_STATE_SQL = 'UPDATE "state" SET "seq" = {p}, "current" = {p} WHERE "id" = 1'
INSERT_CHANGE_SQL = 'INSERT INTO "changes" ("seq", "at", "kind", "user", "state") VALUES ({p}, {p}, {p}, {p}, {p})'
PRUNE_SQL = 'DELETE FROM "changes" WHERE "seq" <= {p}'


def on_commit():
    """Called after each transaction commits in this process; the stream's listener replaces it."""


def sql(template):
    return template.replace("{p}", database.param)


class State:
    """The state row as a transaction sees it: the last change's seq and who is current."""

    __slots__ = ("seq", "current")

    def __init__(self, seq, current):
        self.seq, self.current = seq, current


def record(state, kind, user_id, current=None):
    """Append a change to the log, in the caller's transaction.

    `current` is the current user's profile JSON (or "null") after a change that touched
    the current user, None after one that did not: only the former are streamed."""
    state.seq += 1
    at = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    database.execute_sql(sql(INSERT_CHANGE_SQL), (state.seq, at, kind, user_id, current))


class Pending:
    """One write waiting for a transaction: the job, then its result or its error."""

    __slots__ = ("job", "result", "error", "done")

    def __init__(self, job):
        self.job, self.result, self.error, self.done = job, None, None, False

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    """Runs jobs (functions of the locked State) in shared transactions, one at a time.

    Whoever gets the turn starts a transaction and, once it holds the database's write lock,
    commits everything queued by then, its own job included; a writer whose job an earlier
    turn carried finds it done. Made per process, after gevent has patched threading, so
    the locks are ones its greenlets can wait on.
    """

    def __init__(self):
        self.queue_lock = threading.Lock()
        self.turn = threading.Lock()
        self.queue = []
        # Threads queue while SQLite works (it lets go of the GIL); greenlets only run when
        # the one holding the turn yields, so under gevent it yields once before it commits.
        self.yield_first = db.gevent_patched("time")

    def run(self, job):
        pending = Pending(job)
        with self.queue_lock:
            self.queue.append(pending)
        with self.turn:
            if not pending.done:
                if self.yield_first:
                    time.sleep(0)  # gevent's: ready writers queue before the database is held
                self.commit()
        return pending.outcome()

    def take(self):
        with self.queue_lock:
            batch, self.queue = self.queue, []
        return batch

    def commit(self):
        """One transaction for the whole queue; every job in it is settled when it returns."""
        batch = []
        try:
            with database.connection_context(), db.write_transaction():
                batch = self.take()
                state = State(*database.execute_sql(db.for_update(LOCK_STATE_SQL)).fetchone())
                first = state.seq
                for pending in batch:
                    run_job(pending, state, isolated=len(batch) > 1)
                if state.seq != first:
                    finish(state, first)
        except Exception as error:  # the transaction did not commit: nothing in it was written
            settle(batch or self.take(), as_conflict(error))
        except BaseException:
            settle(batch or self.take(), Problem(503, "The write was interrupted; nothing was written."))
            raise
        else:
            on_commit()
            settle(batch)


def settle(batch, error=None):
    """Mark jobs done, all failed with `error` if the transaction did not commit."""
    for pending in batch:
        if error is not None:
            pending.result, pending.error = None, error
        pending.done = True


def run_job(pending, state, isolated):
    """A job alone in its transaction fails it; one among others fails only its savepoint.
    A failure of the savepoint itself (the connection is gone, say) fails the whole batch."""
    if not isolated:
        pending.result = pending.job(state)
        return
    before = state.seq, state.current
    with database.savepoint() as savepoint:
        try:
            pending.result = pending.job(state)
        except Exception as error:
            savepoint.rollback(begin=False)
            state.seq, state.current = before
            pending.error = as_conflict(error)


def as_conflict(error):
    if isinstance(error, IntegrityError):
        problem = Problem(409, "The change conflicts with another user's data.")
        problem.__cause__ = error
        return problem
    return error


def finish(state, first):
    """Advance the state row past the batch's changes, prune the log and wake listeners."""
    database.execute_sql(sql(SAVE_STATE_SQL), (state.seq, state.current))
    prune_log(first, state.seq, current_app.config["CHANGE_LOG_KEEP"])
    db.notify_change(state.seq)


def prune_log(first, last, keep):
    """Keep the last `keep` changes (at least 1) for resume, pruning whenever the seq passes a
    multiple of PRUNE_EVERY (or of `keep` if fewer), so the log never holds much more."""
    keep = max(1, keep)
    every = min(PRUNE_EVERY, keep)
    if last // every != first // every:
        database.execute_sql(sql(PRUNE_SQL), (last - keep,))


def write(job):
    """Run `job(state)` in a transaction holding the state row; returns what it returns."""
    return current_app.extensions["userservice.commits"].run(job)


def init_app(app):
    app.extensions["userservice.commits"] = GroupCommit()
