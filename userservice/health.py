"""Whether this process can serve: the checks behind GET /.well-known/ready (for a load
balancer or an orchestrator) and `userservice doctor` (for an operator). Each returns None
when all is well, or one line saying what is wrong."""
from . import migrate

FEED_CATCH_UP_SECONDS = 2  # how long readiness waits for the change-log follower


def database(service):
    storage = service.storage
    try:
        with storage.connection():
            storage.database.execute_sql("SELECT 1")
    except Exception as error:
        return "the database is unreachable: %s" % " ".join(str(error).split())
    return None


def migrations(service):
    if service.migrations_current:  # once current, they stay so: nothing un-applies them
        return None
    try:
        pending = migrate.pending(service.storage)
    except Exception as error:
        return "the migrations could not be read: %s" % " ".join(str(error).split())
    if pending:
        return "migrations are pending: %s (run `userservice migrate`)" % ", ".join(pending)
    service.migrations_current = True
    return None


def feed(service):
    """The follower is running and has read the log up to where it ends now."""
    follower = service.follower
    follower.ensure_started()
    if not follower.running():
        return "the change feed is not following the change log: it has stopped"
    end = service.change_log.last_seq()
    follower.wake()
    if not service.hub.wait_until(end, FEED_CATCH_UP_SECONDS):
        return "the change feed is not following the change log: it is behind"
    return None


def token_keys(service):
    """Token sign-in's JWKS can be loaded (when token sign-in is configured)."""
    keys = service.token_keys
    if keys is None:
        return None
    try:
        keys.load()
    except Exception as error:
        return "the OIDC JWKS %s cannot be loaded: %s" % (keys.source, " ".join(str(error).split()))
    return None


READINESS = (database, migrations, feed)  # in this order: each needs the ones before


def unready(service):
    """The first reason this process should not be sent requests, or None."""
    for check in READINESS:
        problem = check(service)
        if problem:
            return problem
    return None
