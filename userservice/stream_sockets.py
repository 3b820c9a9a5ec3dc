"""The connection of a stream (`/user/stream`), at as little cost per subscriber as the
worker allows.

Under a gevent worker, whose sockets never block the process:

- A change goes to the socket from the publisher itself when the kernel takes it at once
  (`Frames.send_now`, given to the hub as a subscription's `direct`). So a change wakes no
  handler, for WebSocket frames and Server-Sent Events alike.
- A stream is held without a greenlet once its handshake is done, or its head written
  (parked_streams.py). simple-websocket (under flask-sock) would keep the handler's greenlet
  and read each connection in a thread of its own, under gevent a second greenlet.

Under threads (gthread, `flask run`) and over TLS each handler sends everything, and
simple-websocket's reader thread reads and pings (`ThreadReader`), as on the health stream.
"""
import os
import ssl
import threading

from .greenlets import patched

RECEIVE_BYTES = 4096  # what simple-websocket reads at a time
CLOSE_REPLY_SECONDS = 1  # how long a handler waits for its reader thread to end
MAX_CLIENT_MESSAGE = 64 * 1024  # clients send nothing; a larger message closes their WebSocket
GOING_AWAY = 1001  # the WebSocket close code for a server shutting down
GOING_AWAY_MESSAGE = "The server is shutting down; connect again."


def owned(sock):
    """Whether a stream's connection can be read and written as above: under gevent, and not
    over TLS (its bytes are not the frames)."""
    return patched("socket") and sock is not None and not isinstance(sock, ssl.SSLSocket)


class NoThread:
    """What simple-websocket is given to start as its reader when the handler reads itself."""

    name = "userservice-websocket"

    def __init__(self, target):
        pass

    def start(self):
        pass


class Frames:
    """The connection's socket as simple-websocket uses it, except that `send` sends every
    byte, one caller at a time. simple-websocket 1.1 calls `send` once per frame: when a slow
    peer's buffers are full the kernel takes part of it and the rest is lost, tearing the
    frame (its issue #45); and its reader thread answers pings on the same socket.
    `send_now` is the publisher's: see the module's docstring."""

    def __init__(self, sock):
        self.sock = sock
        self.sending = threading.Lock()
        self.unsent = b""  # the rest of a frame the kernel took a part of in `send_now`

    def send(self, data):
        """sendall's loop without sendall: gevent's asks the kernel for the send buffer's size
        before every call, a system call per frame sent. What `send_now` left goes first."""
        with self.sending:
            view = memoryview(self.unsent + data if self.unsent else data)
            self.unsent = b""
            while view:
                view = view[self.sock.send(view):]
        return len(data)

    def send_now(self, data):
        """Send without waiting, or not at all: whether the frame was taken. A frame the kernel
        took only a part of counts as sent; its rest waits in `unsent` for the handler's next
        `send` (the caller wakes it). Only where the socket never blocks (`owned`)."""
        if self.unsent or not self.sending.acquire(blocking=False):
            return False
        try:
            self.unsent = data[os.write(self.sock.fileno(), data):]
            return True
        except OSError:  # full (BlockingIOError), or the client has gone: the handler sends it
            return False
        finally:
            self.sending.release()

    def publisher_side(self, woken, frame_of):
        """A subscription's `direct` (hub.Subscription.offer): the event's frame (`frame_of`)
        sent at once, or not taken; `woken` is set when a rest is left for the handler."""

        def deliver(event):
            if not self.send_now(frame_of(event)):
                return False
            if self.unsent:
                woken.set()
            return True

        return deliver

    def __getattr__(self, name):
        return getattr(self.sock, name)


class ThreadReader:
    """simple-websocket's reader thread reads and pings; the handler drops what it kept."""

    def __init__(self, ws):
        self.ws = ws

    def read(self):
        """Clients send nothing worth reading; dropping what they send keeps memory bounded.
        Raises ConnectionClosed once the peer has gone (closed, or failed a ping). Asks
        `receive` only when its reader has left something: under gevent
        `receive(timeout=0)` arms and fires a timer."""
        while self.ws.input_buffer or not self.ws.connected:
            if not self.ws.connected:  # its reader may still be sending the reply to a close
                self.ws.thread.join(CLOSE_REPLY_SECONDS)
            if self.ws.receive(timeout=0) is None:
                return

