"""Living with gevent. A gunicorn gevent worker patches the standard library after the
master has imported userservice, Peewee and psycopg, so what those set up at import time
still blocks the whole worker; these helpers make each wait yield to the other greenlets."""
import importlib
import sys


def patched(module):
    """Whether gevent has patched this standard-library module in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched(module)


def wait_blocking(function, *args):
    """Call a function that blocks in the kernel; under gevent, on a thread of the hub's pool,
    so the worker's other greenlets go on meanwhile."""
    if not patched("threading"):
        return function(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(function, args)


def greenlet_local_connections(pooled):
    """Give each greenlet its own Peewee connection state. Peewee keeps it in a
    threading.local subclass made when peewee was imported (in the gunicorn master, before
    the worker patched threading), so greenlets would otherwise share one connection."""
    if patched("threading"):
        import threading

        import peewee

        pooled._state = type("GreenletConnectionState", (peewee._ConnectionState, threading.local), {})()
    return pooled


def psycopg_waits_cooperatively(psycopg):
    """Make psycopg wait for its socket through gevent when gevent has patched select.

    psycopg picks its wait function once, when first imported, and the gunicorn master
    imports it (through peewee) before a gevent worker patches select: every query, and the
    listener's wait for NOTIFY, would then block the whole worker. Letting psycopg choose
    again picks the function it would have picked had it been imported after the patch.
    """
    if psycopg is None or not patched("select"):
        return
    from psycopg import waiting

    if waiting.wait is getattr(waiting, "wait_c", None):
        importlib.reload(waiting)
