"""A request's body, read off the connection before any view runs, whatever its framing
(Content-Length or chunked): at most MAX_CONTENT_LENGTH bytes (413), complete within
BODY_TIMEOUT seconds (408, and the connection is closed), and framing the server cannot
parse is the client's error (400), never a 500.

Werkzeug stops reading a chunked body at the limit without telling whether more followed,
so a body cut there would pass for the whole one: here one byte more is asked for. The bytes
read then replace the server's input stream, so `request.get_data()` returns them as usual.
"""
import collections
import io
import socket
import threading
import time

from .peers import connection
from .problems import Problem

READ_SIZE = 64 * 1024


def read_body(request, limit, watchdog):
    """Read the body of `request` (a Flask request whose stream nobody has read yet)."""
    environ = request.environ
    length = request.content_length  # None when chunked
    if length is None and "wsgi.input_terminated" not in environ:
        raise Problem(411, "Send the request body with a Content-Length: this server cannot "
                           "tell where a chunked body ends.")
    wanted = length if length is not None else (None if limit is None else limit + 1)
    deadline = watchdog.watch(connection(environ))
    try:
        body = read_up_to(environ["wsgi.input"], wanted)
    except Exception:  # the server's parser refused the framing, or the read was cut off
        body = None
    if watchdog.finished(deadline):
        raise Problem(408, "The request body did not arrive within %g seconds." % watchdog.seconds)
    if body is None:
        raise Problem(400, "The request body's framing is malformed (chunk sizes, line ends or "
                           "trailers), or the connection broke while it was read.")
    if limit is not None and len(body) > limit:
        raise Problem(413, "The request body is larger than %d bytes." % limit)
    if length is not None and len(body) < length:
        raise Problem(400, "The request body ended after %d of the %d bytes its Content-Length "
                           "announced." % (len(body), length))
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def read_up_to(stream, wanted):
    """Bytes from `stream` until it ends or `wanted` (None: no bound) have been read."""
    body = bytearray()
    while wanted is None or len(body) < wanted:
        piece = stream.read(READ_SIZE if wanted is None else min(READ_SIZE, wanted - len(body)))
        if not piece:
            break
        body += piece
    return bytes(body)


class Deadline:
    __slots__ = ("sock", "at", "done", "expired")

    def __init__(self, sock, at):
        self.sock, self.at = sock, at
        self.done = self.expired = False


class Watchdog:
    """Ends the body reads of one app that are not done within `seconds`, by shutting their
    connection's reading side: the blocked read then returns at once, and the server closes
    the connection after the answer. One thread (a greenlet under gevent), started on first
    use, watches every read: a read costs an append and a flag, not a thread or a timer.
    A read whose server exposes no socket, or `seconds` of 0 or None, has no deadline."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.pending = collections.deque()  # Deadlines, soonest first: all are `seconds` long
        self.changed = threading.Condition(threading.Lock())
        self.thread = None
        self.stopping = False

    def watch(self, sock):
        if sock is None or not self.seconds:
            return Deadline(sock, None)
        with self.changed:
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="userservice-body-watchdog", daemon=True)
                self.thread.start()
            deadline = Deadline(sock, time.monotonic() + self.seconds)
            self.pending.append(deadline)
        return deadline

    def finished(self, deadline):
        """Mark the read done; whether its time had run out first."""
        with self.changed:
            deadline.done = True
            while self.pending and self.pending[0].done:
                self.pending.popleft()
        return deadline.expired

    def run(self):
        """Idle, it looks again every `seconds`: a read that starts meanwhile is due no sooner,
        so a new read never needs to wake it."""
        with self.changed:
            while not self.stopping:
                due = self.pending[0].at - time.monotonic() if self.pending else self.seconds
                if due > 0:
                    self.changed.wait(due)
                    continue
                deadline = self.pending.popleft()
                if not deadline.done:
                    deadline.expired = True
                    stop_reading(deadline.sock)

    def close(self):
        with self.changed:
            self.stopping = True
            self.changed.notify()


def stop_reading(sock):
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:  # the client has gone already
        pass
