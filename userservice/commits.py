"""Group commit: the writes waiting in one process share one transaction and one flush.

Every write locks the single state row (the change log's head), so writes commit one at a
time, in the order of their change-log `seq`. Rather than each paying for BEGIN, the state
row, COMMIT and a flush to disk on its own, the writes that arrive while a transaction is
under way wait for the next one, which carries them all, each in a savepoint of its own so
that one that fails leaves the others intact. A write is answered only after its
transaction committed, and then `on_commit(writes, announcement)` is called (the changes it
wrote, listener.Announcement, or None): the link to the stream.
"""
import threading
import time

from peewee import IntegrityError

from .greenlets import patched
from .problems import Problem


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
    """Runs jobs (functions of the locked changelog.Head) in shared transactions.

    Whoever gets the turn starts a transaction and, once it holds the database's write lock,
    commits everything queued by then, its own job included; a writer whose job an earlier
    turn carried finds it done. Made per app in the process that serves it, after gevent has
    patched threading, so the locks are ones its greenlets can wait on.
    """

    def __init__(self, storage, change_log, on_commit):
        self.storage = storage
        self.log = change_log
        self.on_commit = on_commit
        self.queue_lock = threading.Lock()
        self.turn = threading.Lock()
        self.queue = []
        # Threads queue while SQLite works (it lets go of the GIL); greenlets only run when
        # the one holding the turn yields, so under gevent it yields once before it commits.
        self.yield_first = patched("time")

    def run(self, job):
        """Run `job(head)` in a transaction holding the state row; returns what it returns."""
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
        batch, announcement = [], None
        try:
            with self.storage.connection(), self.storage.write_transaction():
                batch = self.take()
                head = self.log.lock_head()
                first = head.seq
                for pending in batch:
                    self.run_job(pending, head, isolated=len(batch) > 1)
                if head.seq != first:
                    announcement = self.log.seal(head, first)
        except Exception as error:  # the transaction did not commit: nothing in it was written
            settle(batch or self.take(), as_conflict(error))
        except BaseException:
            settle(batch or self.take(), Problem(503, "The write was interrupted; nothing was written."))
            raise
        else:
            self.on_commit(len(batch), announcement)
            settle(batch)

    def run_job(self, pending, head, isolated):
        """A job alone in its transaction fails it; one among others fails only its savepoint.
        A failure of the savepoint itself (the connection is gone, say) fails the whole batch."""
        if not isolated:
            pending.result = pending.job(head)
            return
        before = head.seq, head.current
        with self.storage.database.savepoint() as savepoint:
            try:
                pending.result = pending.job(head)
            except Exception as error:
                savepoint.rollback(begin=False)
                head.seq, head.current = before
                pending.error = as_conflict(error)


def settle(batch, error=None):
    """Mark jobs done, all failed with `error` if the transaction did not commit."""
    for pending in batch:
        if error is not None:
            pending.result, pending.error = None, error
        pending.done = True


def as_conflict(error):
    if isinstance(error, IntegrityError):
        problem = Problem(409, "The change conflicts with another user's data.")
        problem.__cause__ = error
        return problem
    return error
