"""Everything one app owns, kept in `app.extensions["userservice"]` as Flask extensions do.

Two apps in one process (an embedding site with two mounts, a test with two databases)
share none of it: not the database binding and pool, the commit counter, the read cache,
the group commit, the change-log follower and hub, the parked streams, the keys tokens are checked with, nor
the watchdog of slow request bodies.
"""
from flask import current_app

from .body_reader import Watchdog
from .changelog import ChangeLog, Follower
from .commits import GroupCommit
from .hub import Heartbeat, Hub
from .migrate import migrate
from .parked_streams import ParkedStreams
from .profiles import Profiles
from .read_cache import ReadCache
from .storage import Storage
from .stream_sockets import MAX_CLIENT_MESSAGE
from .tokens import keys_for

EXTENSION = "userservice"


class UserService:
    """The parts of one app, wired once, each link passed where it is built: a commit
    reaches the stream through the `on_commit` the group commit is given."""

    def __init__(self, config, metrics):
        self.metrics = metrics
        self.storage = Storage(config["DATABASE_URL"], config["DATABASE_MAX_CONNECTIONS"], metrics,
                               max_idle=config["DATABASE_MAX_IDLE"], direct_url=config["DATABASE_DIRECT_URL"])
        self.change_log = ChangeLog(self.storage, config["CHANGE_LOG_KEEP"])
        self.hub = Hub()
        self.follower = Follower(self.change_log, self.hub, config["STREAM_POLL_INTERVAL"], metrics,
                                 Heartbeat(self.hub, {"sse": config["STREAM_HEARTBEAT_INTERVAL"],
                                                      "ping": config["STREAM_PING_INTERVAL"]}),
                                 relay=config["FEED_RELAY"])
        self.parked = ParkedStreams(self.hub, metrics, MAX_CLIENT_MESSAGE)
        self.commits = GroupCommit(self.storage, self.change_log, on_commit=self.committed)
        self.profiles = Profiles(self.storage)
        self.read_cache = ReadCache(self.storage)
        self.token_keys = keys_for(config)
        self.body_watchdog = Watchdog(config["BODY_TIMEOUT"])
        self.cloud_domain = config["CLOUD_DOMAIN"]  # vanity URLs are https://<vanityname>.<this>
        self.migrations_current = False  # set by the readiness check once they are

    def committed(self, writes, announcement):
        """After each transaction the group commit carried: `writes` of them, now durable."""
        self.follower.wake(announcement)
        self.metrics.committed(writes)

    def close(self):
        """Stop the follower, then close the pool it reads through."""
        self.metrics.close()
        self.body_watchdog.close()
        self.follower.close()
        self.storage.close()


def init_app(app, metrics):
    service = UserService(app.config, metrics)
    app.extensions[EXTENSION] = service
    if app.config["MIGRATE_ON_START"]:
        migrate_directly(service.storage, metrics)
    service.storage.count_commit()  # a writer killed between its commit and its count must
    # not leave that commit hidden behind the other processes' read caches
    return service


def migrate_directly(pooled, metrics):
    """Migrate through the direct URL: the migration lock is a session's advisory lock, which
    PgBouncer in transaction pooling mode would not keep."""
    if pooled.direct_url == pooled.url:
        migrate(pooled)
        return
    direct = Storage(pooled.direct_url, 1, metrics)
    try:
        migrate(direct)
    finally:
        direct.close()


def current():
    """The serving app's parts."""
    return current_app.extensions[EXTENSION]
