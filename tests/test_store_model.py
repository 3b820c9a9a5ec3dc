"""A stateful model of the User and Users APIs (issue 11), driven through the real app on both
backends: Hypothesis runs sequences of requests to every endpoint against a fresh database,
predicts each answer from a small model of what the device should hold, and after every step
checks the invariants against the service:

- the users listed are the model's, in sign-in order, with the model's names, emails, vanity
  names, allocations, beta status and providers; GET /users/{id} and GET /user agree with it;
- no two users share a username, a vanity name or a vanity URL, compared case-insensitively;
- a vanity URL is always https://<vanityname>.<CLOUD_DOMAIN>, and there is none without a name;
- GET /user (and /user/providers) equals the state last sent on the stream (a live SSE reader);
- every change recorded names a user whose profile changed (or, for select, who became
  current), and every profile that changed has its change recorded;
- no answer is a 5xx, and every 4xx leaves the database exactly as it was.

Bounded by the "ci" Hypothesis profile (conftest.py); `--hypothesis-profile long` runs longer.
"""
import dataclasses
import datetime
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from userservice import create_app
from userservice.mapping import profile_id_for
from conftest import EventReader, discard, dump_database, fresh_postgres_url, parts


class Long(str):
    """A string past a PostgreSQL btree entry's limit (the unique indexes hold digests), shown
    by its start and length in a failing example."""

    def __repr__(self):
        return "Long(%r, %d characters)" % (self[:4], len(self))


ISSUER, AUDIENCE, DOMAIN = "https://issuer.example/", "pieces-desktop", "pieces.cloud"
KEY = ec.generate_private_key(ec.SECP256R1())
SUBJECTS = ["auth0|1", "auth0|2", "auth0|3", "google-oauth2|4"]
GLOBAL_IDS = [None, "g-1", "g-2"]
NAMES = ["john", "John", "mark", Long("l" * 3000), Long("L" * 3000)]
VANITY_NAMES = ["shared", "SHARED", "mine", Long("v" * 3000), "not_a_label"]
EMAILS = ["a@x.io", Long("e" * 3000 + "@x.io")]
IDENTITIES = [{"provider": "github", "user_id": "gh-1"}, {"provider": "google-oauth2", "user_id": "go-1"}]
AESTHETICS = {"theme": {"dark": True}, "font": {"size": 12}}
ALLOCATION = {"id": "a1", "user": "u", "project": "p", "status": {"cloud": "RUNNING"},
              "urls": {"base": {"status": "RUNNING", "url": "https://base.pieces.cloud"},
                       "id": {"status": "RUNNING", "url": "https://a1.pieces.cloud"}}}
VISION = {"from": {"value": "2024-01-01T00:00:00+00:00"}, "continuous": True}
STREAM_WAIT_SECONDS = 3  # a change the stream does not deliver by then fails the step
KEEP = "<keep>"  # an update that sends the stored value back
GHOST = 14  # picks of a user from 0 to 15: the last two name a user who does not exist
USER = st.integers(0, 15)


def optional(values):
    return st.sampled_from([None, *values])


def is_dns_label(name):
    return len(name) <= 63 and name.replace("-", "").isalnum() and name.isascii()


@dataclasses.dataclass
class Person:
    """What the device should hold for one user."""

    id: str
    subject: str = None
    username: str = None
    vanityname: str = None
    email: str = None
    name: str = None
    allocation: bool = False
    vanity_url: bool = False
    beta: bool = False
    providers: frozenset = frozenset()


class Device:
    """The model: users in the order they first signed in, and who is current."""

    def __init__(self):
        self.users, self.current = {}, None

    def held(self, field, value, besides):
        return any((getattr(user, field) or "").lower() == value.lower()
                   for user in self.users.values() if user.id != besides)

    def by_subject(self, subject):
        return next((user.id for user in self.users.values() if user.subject == subject), None)

    def sign_in(self, user_id, subject, carried, username=None, vanityname=None, providers=None):
        """The sign-in rules: what is carried replaces, a name someone else holds is not taken."""
        user = self.users.setdefault(user_id, Person(user_id))
        for field, value in carried.items():
            setattr(user, field, value)
        if username and not self.held("username", username, user_id):
            user.username = username
        if vanityname and not self.held("vanityname", vanityname, user_id):
            user.vanityname = vanityname.lower()
        if providers is not None:
            user.providers |= providers
        if subject and self.by_subject(subject) in (None, user_id):
            user.subject = subject
        return user


def sign(subject, **claims):
    now = datetime.datetime.now(datetime.timezone.utc)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now,
              "exp": now + datetime.timedelta(minutes=5), **claims}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, KEY, algorithm="ES256", headers={"kid": "k"})


class DeviceMachine(RuleBasedStateMachine):
    """One example: a fresh app and database, a live stream, and the model beside them."""

    new_database_url = None  # set per test: a function returning an empty database's URL
    jwks_path = None

    def __init__(self):
        super().__init__()
        self.app = create_app({"TESTING": True, "DATABASE_URL": self.new_database_url(), "CLOUD_DOMAIN": DOMAIN,
                               "STREAM_POLL_INTERVAL": 0.01, "STREAM_HEARTBEAT_INTERVAL": 0.2, "OIDC_JWKS": self.jwks_path,
                               "OIDC_ISSUER": ISSUER, "OIDC_AUDIENCE": AUDIENCE})
        self.client = self.app.test_client()
        self.device = Device()
        self.stream = EventReader(self.client.get("/user/stream", buffered=False), wait_seconds=STREAM_WAIT_SECONDS)
        self.streamed = self.stream.next_event()
        self.documents, self.seq, self.current = {}, 0, None

    def teardown(self):
        self.stream.close()
        discard(self.app)

    # --- requests ---------------------------------------------------------------------------

    def send(self, method, path, body, expected):
        before = dump_database(self.app)
        response = self.client.open(path, method=method, json=body)
        assert response.status_code == expected, (method, path, response.get_data(as_text=True))
        if response.status_code >= 400:
            assert response.mimetype == "application/problem+json"
            assert dump_database(self.app) == before, "a refused request changed the database"
        return response

    def pick(self, index):
        """An existing user's id, or now and then one nobody has."""
        ids = list(self.device.users)
        return ids[index % len(ids)] if ids and index < GHOST else "ghost"

    def pick_current(self, index):
        """Mostly the current user (the one these endpoints accept), else as `pick`."""
        current = self.device.current
        return current if current is not None and index < GHOST // 2 else self.pick(index)

    def stored(self, user_id):
        return self.client.get("/users/%s" % user_id).get_json()

    # --- rules: every endpoint of the User and Users APIs -------------------------------------

    @initialize(subject=st.sampled_from(SUBJECTS), nickname=optional(NAMES))
    def signed_in_with_a_cloud(self, subject, nickname):
        """Start where most endpoints have something to do: a current user with an allocation."""
        self.select(subject, None, nickname, False, None, None, None, None)
        self.update(list(self.device.users).index(self.device.current), KEEP, KEEP, KEEP, "add")

    @rule(subject=st.sampled_from(SUBJECTS), global_id=st.sampled_from(GLOBAL_IDS), nickname=optional(NAMES),
          as_username=st.booleans(), email=optional(EMAILS), name=optional(["Ann", "Bob"]),
          vanityname=optional(VANITY_NAMES), identities=st.sets(st.sampled_from([0, 1])) | st.none())
    def select(self, subject, global_id, nickname, as_username, email, name, vanityname, identities):
        body = {"user_id": subject, "email": email, "name": name,
                ("username" if as_username else "nickname"): nickname}
        if global_id:
            body["user_metadata"] = {"global_id": global_id, "vanityname": vanityname}
        if identities is not None:
            body["identities"] = [IDENTITIES[n] for n in sorted(identities)]
        self.send("POST", "/user/select", {k: v for k, v in body.items() if v is not None}, 200)
        user_id = global_id or self.device.by_subject(subject) or profile_id_for(subject)
        providers = None if identities is None else frozenset(IDENTITIES[n]["provider"] for n in identities)
        carried = {key: value for key, value in (("email", email), ("name", name)) if value}
        self.device.sign_in(user_id, subject, carried, nickname, global_id and vanityname, providers)
        self.device.current = user_id

    @rule(subject=st.sampled_from(SUBJECTS), username=optional(NAMES), email=optional(EMAILS),
          name=optional(["Cy", "Di"]))
    def token_sign_in(self, subject, username, email, name):
        token = sign(subject, preferred_username=username, email=email, name=name)
        body = {"access_token": "opaque", "token_type": "Bearer", "expires_in": 60, "id_token": token}
        self.send("POST", "/users/authenticate/from_token", body, 200)
        user_id = self.device.by_subject(subject) or profile_id_for(subject)
        carried = {key: value for key, value in (("email", email), ("name", name)) if value}
        self.device.sign_in(user_id, subject, carried, username)

    @rule(index=USER, username=st.sampled_from([KEEP, None, *NAMES]),
          vanityname=st.sampled_from([KEEP, None, *VANITY_NAMES]), email=st.sampled_from([KEEP, None, *EMAILS]),
          allocation=st.sampled_from([KEEP, "add", "drop"]))
    def update(self, index, username, vanityname, email, allocation):
        user_id = self.pick(index)
        if user_id == "ghost":
            self.send("POST", "/user/update", {"id": user_id, "aesthetics": AESTHETICS}, 404)
            return
        user, body = self.device.users[user_id], self.stored(user_id)
        for field, value in (("username", username), ("vanityname", vanityname), ("email", email)):
            if value is not KEEP:
                body[field] = value
        if allocation != KEEP:
            body["allocation"] = ALLOCATION if allocation == "add" else None
        taken = any(value not in (KEEP, None) and (getattr(user, field) or "").lower() != value.lower()
                    and self.device.held(field, value, user_id)
                    for field, value in (("username", username), ("vanityname", vanityname)))
        self.send("POST", "/user/update", body, 409 if taken else 200)
        if taken:
            return
        for field, value in (("username", username), ("vanityname", vanityname), ("email", email)):
            if value is not KEEP:
                setattr(user, field, value.lower() if value and field == "vanityname" else value)
        if allocation != KEEP:
            user.allocation, user.vanity_url = allocation == "add", False
        user.vanity_url = user.vanity_url and user.vanityname is not None

    @rule(index=USER, name=st.sampled_from(VANITY_NAMES))
    def vanity(self, index, name):
        user_id, device = self.pick_current(index), self.device
        user = device.users.get(user_id)
        if not is_dns_label(name):
            expected = 400
        elif user_id != device.current:
            expected = 511
        elif not user.allocation:
            expected = 404
        else:
            expected = 409 if device.held("vanityname", name, user_id) else 200
        self.send("POST", "/user/update/vanity", {"id": user_id, "vanityname": name}, expected)
        if expected == 200:
            user.vanityname, user.vanity_url = name.lower(), True

    @rule(index=USER, vision=st.booleans())
    def beta(self, index, vision):
        user_id = self.pick_current(index)
        body = {"user": user_id, "auth0": {"vision": VISION} if vision else {"unknown": True}}
        current = user_id == self.device.current
        self.send("POST", "/user/beta/status", body, 200 if current else 511)
        if current:
            self.device.users[user_id].beta = vision

    @rule(clear=st.booleans())
    def clear_or_refresh(self, clear):
        current = self.device.current
        if clear:
            self.send("POST", "/user/clear", None, 204)
            self.device.current = None
            return
        response = self.send("GET", "/user/refresh", None, 511 if current is None else 200)
        if current is not None:
            assert response.get_json() == self.stored(current)

    @precondition(lambda self: len(self.device.users) > 1)
    @rule(index=USER)
    def disconnect(self, index):
        user_id = self.pick(index)
        self.send("POST", "/users/%s/disconnect" % user_id, None, 404 if user_id == "ghost" else 200)
        if self.device.users.pop(user_id, None) is not None and self.device.current == user_id:
            self.device.current = None

    # --- invariants, checked after every step ----------------------------------------------

    @invariant()
    def users_are_the_models(self):
        listed = self.client.get("/users").get_json()["iterable"]
        assert [user["id"] for user in listed] == list(self.device.users)
        for profile in listed:
            expected = self.device.users[profile["id"]]
            allocation = profile.get("allocation")
            assert Person(profile["id"], expected.subject, profile.get("username"), profile.get("vanityname"),
                          profile.get("email"), profile.get("name"), allocation is not None,
                          "vanity" in (allocation or {"urls": {}})["urls"], "beta" in profile.get("auth0", {}),
                          frozenset(p["type"] for p in profile.get("providers", {}).get("iterable", []))) == expected
            assert self.client.get("/users/%s" % profile["id"]).get_json() == profile
        current = self.device.current
        expected = {} if current is None else {"user": next(p for p in listed if p["id"] == current)}
        assert self.client.get("/user").get_json() == self.client.get("/user/providers").get_json() == expected

    @invariant()
    def names_are_unique_and_vanity_urls_follow_them(self):
        listed = self.client.get("/users").get_json()["iterable"]
        for field in ("username", "vanityname"):
            values = [user[field].lower() for user in listed if user.get(field)]
            assert len(values) == len(set(values)), (field, values)
        urls = []
        for user in listed:
            vanity = (user.get("allocation") or {"urls": {}})["urls"].get("vanity")
            if vanity:
                assert user.get("vanityname") and vanity["url"] == "https://%s.%s" % (user["vanityname"], DOMAIN)
                urls.append(vanity["url"].lower())
        assert len(urls) == len(set(urls))

    @invariant()
    def stream_sent_what_get_user_holds(self):
        storage = parts(self.app).storage
        Change = storage.models.Change
        with storage.connection():
            last = Change.select(Change.seq).where(Change.state.is_null(False)).order_by(Change.seq.desc()).scalar()
        while self.streamed[0] < (last or 0):
            self.streamed = self.stream.next_event()
        body = self.client.get("/user").get_data(as_text=True)
        assert self.streamed[1] == ("null" if body == "{}" else body[len('{"user":'):-1])

    @invariant()
    def changes_recorded_are_the_changes_made(self):
        storage = parts(self.app).storage
        Change, User = storage.models.Change, storage.models.User
        with storage.connection():
            recorded = list(Change.select(Change.kind, Change.user).where(Change.seq > self.seq).tuples())
            documents = dict(User.select(User.id, User.document).tuples())
            self.seq, current = storage.statements.lock_head.one(storage.database)
        changed = {user_id for user_id in documents.keys() | self.documents.keys()
                   if documents.get(user_id) != self.documents.get(user_id)}
        for kind, user_id in recorded:
            switched = kind == "select" and user_id != self.current
            assert kind in ("clear", "refresh") or switched or user_id in changed, (kind, user_id)
        assert changed <= {user_id for _kind, user_id in recorded}, (changed, recorded)
        self.documents, self.current = documents, current


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_device_model_holds_the_sign_in_rules_and_invariants(backend, request, tmp_path):
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k", "alg": "ES256"}]}))
    databases = iter(range(10 ** 6))

    def new_database_url():
        if backend == "postgres":
            return fresh_postgres_url(request)
        return "sqlite:///%s" % (tmp_path / ("device-%d.db" % next(databases)))

    machine = type("Machine", (DeviceMachine,), {"new_database_url": staticmethod(new_database_url),
                                                 "jwks_path": str(tmp_path / "jwks.json")})
    run_state_machine_as_test(machine, settings=settings())  # the loaded profile's bounds
