"""Whether the client behind a request is still connected.

Long-lived streams are asked before a full server refuses a newcomer, and a write that failed
because the client had gone is an expected end, not a server failure. The answer comes from
the kernel (the TCP state of the connection), so asking reads nothing and blocks nothing,
under gevent or threads alike.
"""
import errno
import socket

SERVER_SOCKETS = ("gunicorn.socket", "werkzeug.socket")  # where servers expose the connection
TCP_ESTABLISHED = 1  # tcpi_state, the first byte of Linux's struct tcp_info


def connection(environ):
    """The request's socket, where the WSGI server exposes it (gunicorn, Werkzeug); else None."""
    for key in SERVER_SOCKETS:
        if key in environ:
            return environ[key]
    return None


def gone(sock):
    """Whether the client has closed or reset the connection (or this side has closed it).

    A client that has only closed its sending side counts as gone: streams' clients send
    nothing more after their request anyway. Where the kernel cannot tell (no socket, not
    TCP, not Linux) the client is taken to be there.
    """
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return False
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError as error:
        return error.errno == errno.EBADF
    return state != TCP_ESTABLISHED
