"""One LISTEN per instance, however many workers it runs.

Under gunicorn the master starts this relay as a process of its own (server.py), before it
forks the workers, and tells them the path of its Unix socket (the FEED_RELAY setting). The
relay holds the instance's one LISTEN connection, on the direct URL, and sends every worker
connected to it a datagram for each NOTIFY, and one after each (re)connection to the
database, since notifications sent meanwhile are lost. A worker's follower catches up after
each datagram, and reads the change log through its pool after each (re)connection to the
relay: the log stays the source of truth, so a relay or database restart loses no change,
and nobody polls while nothing is written.

Each datagram is a NOTIFY's payload, what the transaction wrote (listener.Announcement): a
follower skips reading the log for commits that streamed nothing. A datagram that does not
fit a worker's socket buffer is dropped: the follower finds the gap in the seqs and reads
the log.
"""
import logging
import logging.config
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .config import checked_config
from .listener import RECONNECT_BACKOFF_SECONDS, connect_listening, listener_params
from .log_format import logging_config

try:
    import psycopg
except ImportError:  # PostgreSQL is optional: the `postgres` extra
    psycopg = None

log = logging.getLogger("userservice.feed_relay")

REREAD = b"*"  # after a (re)connection: read the log, whatever it announces
DATAGRAM_BYTES = 64
# not `-m userservice.feed_relay`: the package imports this module, and runpy would warn
# about that on stderr, a line that is not JSON under LOG_FORMAT=json
RELAY_COMMAND = "import sys; from userservice.feed_relay import main; main(sys.argv)"
RESTART_SECONDS = 1  # the master waits this long before it restarts a relay that exited
START_SECONDS = 10  # how long the master waits for a new relay's socket


class RelayProcess:
    """The master's side: runs the relay as a child process, restarting it should it exit,
    in a private temporary directory that holds its socket. A thread of the master waits
    for the relay's stdout to close (its exit) rather than for its pid, which gunicorn reaps."""

    def __init__(self, environment):
        self.environment = environment
        self.directory = tempfile.mkdtemp(prefix="userservice-feed-")  # mode 0700
        self.path = os.path.join(self.directory, "relay.sock")
        self.stopping = threading.Event()
        self.process = None
        self.thread = threading.Thread(target=self.supervise, name="userservice-feed-relay", daemon=True)

    def start(self):
        self.thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not os.path.exists(self.path) and time.monotonic() < deadline:
            time.sleep(0.01)

    def supervise(self):
        while not self.stopping.is_set():
            self.process = subprocess.Popen(
                [sys.executable, "-c", RELAY_COMMAND, self.path], env=self.environment,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.process.stdout.read()  # returns when the relay exits
            if not self.stopping.wait(RESTART_SECONDS):
                log.warning("the feed relay exited (pid %d); starting it again", self.process.pid)

    def stop(self):
        self.stopping.set()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except (subprocess.TimeoutExpired, ChildProcessError):
                self.process.kill()
        self.thread.join(5)
        shutil.rmtree(self.directory, ignore_errors=True)


class Relay:
    """The relay process: accepts workers on `path`, LISTENs with `params`, and ends when
    `lifeline` (its stdin, a pipe from the master) reaches end of file."""

    def __init__(self, path, params, lifeline):
        self.path = path
        self.params = params
        self.lifeline = lifeline
        self.selector = selectors.DefaultSelector()
        self.workers = set()
        self.connection = self.connection_fd = None
        self.next_attempt, self.delay = 0.0, RECONNECT_BACKOFF_SECONDS[0]

    def run(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listening:
            if os.path.exists(self.path):  # left by a relay that was killed
                os.unlink(self.path)
            listening.bind(self.path)
            listening.listen(128)
            self.selector.register(listening, selectors.EVENT_READ, self.accept)
            self.selector.register(self.lifeline, selectors.EVENT_READ, self.check_lifeline)
            while self.lifeline is not None:
                self.reconnect_when_due()
                timeout = None if self.connection is not None else max(0.0, self.next_attempt - time.monotonic())
                for key, _events in self.selector.select(timeout):
                    key.data(key.fileobj)
        self.disconnect()

    def accept(self, listening):
        worker, _address = listening.accept()
        worker.setblocking(False)
        self.workers.add(worker)
        self.selector.register(worker, selectors.EVENT_READ, self.drop)

    def drop(self, worker):
        """A worker sends nothing: readable means it has gone."""
        self.selector.unregister(worker)
        self.workers.discard(worker)
        worker.close()

    def check_lifeline(self, lifeline):
        if not os.read(lifeline.fileno(), 4096):  # the master (and every worker) has exited
            self.lifeline = None

    def broadcast(self, datagram):
        for worker in list(self.workers):
            try:
                worker.send(datagram)
            except BlockingIOError:
                pass  # it has datagrams it has not read yet; it reads the log after them
            except OSError:
                self.drop(worker)

    def reconnect_when_due(self):
        if self.connection is not None or time.monotonic() < self.next_attempt:
            return
        try:
            self.connection = connect_listening(self.params)
        except psycopg.Error as error:
            log.warning("feed relay cannot reach the database, retrying in %.1fs: %s", self.delay, error)
            self.next_attempt = time.monotonic() + self.delay
            self.delay = min(self.delay * 2, RECONNECT_BACKOFF_SECONDS[1])
            return
        self.delay = RECONNECT_BACKOFF_SECONDS[0]
        self.connection_fd = self.connection.fileno()  # asking a lost connection would raise
        self.selector.register(self.connection_fd, selectors.EVENT_READ, self.relay_notifications)
        self.broadcast(REREAD)

    def relay_notifications(self, _fileno):
        try:
            payloads = [notify.payload for notify in self.connection.notifies(timeout=0)]
        except psycopg.Error as error:
            log.warning("feed relay lost its database connection: %s", error)
            self.disconnect()
            return
        for payload in payloads:  # each tells the followers what it wrote (listener.Announcement)
            self.broadcast(payload.encode()[:DATAGRAM_BYTES] or REREAD)

    def disconnect(self):
        if self.connection is not None:
            self.selector.unregister(self.connection_fd)
            self.connection.close()
            self.connection = self.connection_fd = None


class RelayClient:
    """A worker's end: `wait` returns on a datagram from the relay, on the local `wakeup`,
    and once after every (re)connection to the relay. Each datagram is passed to `heard`,
    and None after each (re)connection or loss (the caller then reads the log). While the
    relay cannot be reached, `wait` returns after each backoff interval instead."""

    def __init__(self, path, wakeup, poll_interval, heard):
        self.path = path
        self.wakeup = wakeup
        self.poll_interval = poll_interval
        self.heard = heard
        self.socket = None
        self.delay = RECONNECT_BACKOFF_SECONDS[0]

    def wait(self):
        if self.socket is None:
            self.connect()
        else:
            self.wait_for_datagram()
        self.wakeup.clear()

    def connect(self):
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            connection.connect(self.path)
        except OSError as error:
            connection.close()
            log.warning("change feed cannot reach the instance's relay, retrying in %.1fs: %s",
                        self.delay, error)
            self.wakeup.wait(self.delay)
            self.delay = min(self.delay * 2, RECONNECT_BACKOFF_SECONDS[1])
            self.heard(None)
            return
        connection.settimeout(self.poll_interval)
        self.socket, self.delay = connection, RECONNECT_BACKOFF_SECONDS[0]
        self.heard(None)  # what was announced while it was away is lost

    def wait_for_datagram(self):
        while not self.wakeup.is_set():
            try:
                datagram = self.socket.recv(DATAGRAM_BYTES)
            except TimeoutError:
                continue  # look at the local wakeup again
            except OSError as error:
                datagram, reason = b"", error
            else:
                reason = "it closed the connection"
            if not datagram:
                log.warning("change feed lost the instance's relay: %s", reason)
                self.close()
                self.heard(None)
                return
            self.heard(datagram)
            self.drain()
            return

    def drain(self):
        """Datagrams that arrived meanwhile: the follower catches up with them all at once."""
        self.socket.setblocking(False)
        try:
            while datagram := self.socket.recv(DATAGRAM_BYTES):
                self.heard(datagram)
        except (BlockingIOError, OSError):
            pass
        finally:
            if self.socket is not None:
                self.socket.settimeout(self.poll_interval)

    def close(self):
        if self.socket is not None:
            self.socket.close()
            self.socket = None


def main(argv):
    """The relay process (RELAY_COMMAND SOCKET), started by the gunicorn master; the database
    comes from the same settings as the workers' (DATABASE_DIRECT_URL)."""
    config = checked_config()
    logging.config.dictConfig(logging_config(config["LOG_FORMAT"]))
    relay = Relay(argv[1], listener_params(config["DATABASE_DIRECT_URL"]), sys.stdin)
    try:
        relay.run()
    except KeyboardInterrupt:
        pass
