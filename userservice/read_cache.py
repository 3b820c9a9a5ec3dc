"""The hot reads, GET /user and GET /users/{user}, served from memory while the database's
commit marker is unchanged: it moves after every commit, in any process, before the writer
is answered, so a write acknowledged anywhere is seen by the next read here.

Their answers are kept encoded too, as the bytes sent, so a hot read encodes nothing."""
from .problems import UnknownUser

CURRENT = None  # the key of GET /user's answer among a generation's answers


def returned_user_profile(document):
    """A ReturnedUserProfile as sent: the profile under `user`, or `{}` when nobody is signed in."""
    return b"{}" if document == "null" else ('{"user":%s}' % document).encode()


class Generation:
    """Documents read after the commit marker was `key`. A document read after the marker
    was read may be newer than the marker, never older: nothing stale is served."""

    __slots__ = ("key", "current", "users", "answers")

    def __init__(self, key):
        self.key = key
        self.current = None
        self.users = {}
        self.answers = {}  # CURRENT or a user id -> the encoded body of its GET


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
        return self.current_in(self.fresh())

    def current_in(self, generation):
        if generation.current is None:
            storage = self.storage
            with storage.connection():
                generation.current = storage.statements.current_document.scalar(storage.database) or "null"
        return generation.current

    def user(self, user_id):
        """A stored user's profile JSON; UnknownUser if there is none."""
        return self.user_in(self.fresh(), user_id)

    def user_in(self, generation, user_id):
        document = generation.users.get(user_id)
        if document is None:
            storage = self.storage
            with storage.connection():
                document = storage.statements.user_document.scalar(storage.database, id=user_id)
            if document is None:
                raise UnknownUser(user_id)
            generation.users[user_id] = document
        return document

    def current_answer(self):
        """GET /user's body: a ReturnedUserProfile, encoded once per generation."""
        generation = self.fresh()
        answer = generation.answers.get(CURRENT)
        if answer is None:
            answer = generation.answers[CURRENT] = returned_user_profile(self.current_in(generation))
        return answer

    def user_answer(self, user_id):
        """GET /users/{user_id}'s body, encoded once per generation; UnknownUser if none."""
        generation = self.fresh()
        answer = generation.answers.get(user_id)
        if answer is None:
            answer = generation.answers[user_id] = self.user_in(generation, user_id).encode()
        return answer

    def cached_answer(self, user_id=CURRENT):
        """The body of GET /user (or of GET /users/{user_id}) if the present generation holds
        it already, else None; reads no document."""
        return self.fresh().answers.get(user_id)
