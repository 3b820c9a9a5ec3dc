"""The commit counter of an SQLite database: a number in a small file beside it, counted up
after every commit, before the writer is answered. The processes on its host learn from one
memory read, with no connection and no query, whether anything was committed since they last
looked (the read cache depends on it). Its file lock is the writers' turn, which also makes
each count atomic."""
import contextlib
import fcntl
import mmap
import os
import struct

from .greenlets import wait_blocking


def create_private_file(path):
    """Create a file readable by its owner only (before SQLite would create it 0644)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


class CommitCounter:
    FORMAT = "=Q"

    def __init__(self, path):
        create_private_file(path)
        size = struct.calcsize(self.FORMAT)
        self.fd = os.open(path, os.O_RDWR)
        if os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)

    def read(self):
        """A read racing a count may see the old count (its writer has not answered yet) or a
        torn value no reader has cached (which costs one fresh read of the database)."""
        return struct.unpack_from(self.FORMAT, self.map)[0]

    @contextlib.contextmanager
    def turn(self):
        """Exclusive across processes; a wait for another process's turn yields the worker."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            wait_blocking(fcntl.flock, self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def count(self):
        """Add one; only while holding the turn, since a lost increment could repeat a count."""
        struct.pack_into(self.FORMAT, self.map, 0, self.read() + 1)

    def count_alone(self):
        """Count a commit made outside a turn (by a migration, say)."""
        with self.turn():
            self.count()

    def close(self):
        self.map.close()
        os.close(self.fd)
