"""The hot reads, GET /user and GET /users/{user}, served from memory while the database's
commit marker is unchanged: it moves after every commit, in any process, before the writer
is answered, so a write acknowledged anywhere is seen by the next read here."""
from .problems import UnknownUser


class Generation:
    """Documents read after the commit marker was `key`. A document read after the marker
    was read may be newer than the marker, never older: nothing stale is served."""

    __slots__ = ("key", "current", "users")

    def __init__(self, key):
        self.key = key
        self.current = None
        self.users = {}


class ReadCache:
    """One app's stored documents as this process last read them."""

    def __init__(self, storage):
        self.storage = storage
        self.generation = Generation(None)

    def fresh(self):
        """The generation for the present commit marker (a new one after any commit)."""
        marker = self.storage.commit_marker()
        generation = self.generation
        if generation.key != marker:
            generation = self.generation = Generation(marker)
        return generation

    def current_profile(self):
        """The current user's profile JSON, or "null"."""
        generation = self.fresh()
        if generation.current is None:
            storage = self.storage
            with storage.connection():
                generation.current = storage.statements.current_document.scalar(storage.database) or "null"
        return generation.current

    def user(self, user_id):
        """A stored user's profile JSON; UnknownUser if there is none."""
        generation = self.fresh()
        document = generation.users.get(user_id)
        if document is None:
            storage = self.storage
            with storage.connection():
                document = storage.statements.user_document.scalar(storage.database, id=user_id)
            if document is None:
                raise UnknownUser(user_id)
            generation.users[user_id] = document
        return document
