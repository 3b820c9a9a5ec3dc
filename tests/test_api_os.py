"""/os/sign_in and /os/sign_out, on both backends: what PiecesOS clients (pieces-cli, the SDK's
PiecesClient) call to sign in and out, answered as the PiecesOS API documents them."""
import json

import pytest
from hypothesis import HealthCheck, settings, strategies
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from userservice import store
from userservice.mapping import profile_id_for
from conftest import EventReader, dump_database, parts

SUBJECTS = ("auth0|ada", "auth0|bob", "auth0|cy")


@pytest.fixture
def app_config(app_config):
    app_config.update(STREAM_HEARTBEAT_INTERVAL=0.2)
    return app_config


@pytest.fixture
def stream(client):
    """A stream subscriber that has read the first state: nobody signed in."""
    response = client.get("/user/stream", buffered=False)
    assert response.status_code == 200
    reader = EventReader(response)
    assert reader.next_event()[1] == "null"
    yield reader
    reader.close()


def select(client, subject="auth0|ada", **fields):
    response = client.post("/user/select", json={"user_id": subject, **fields})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def last_change(app):
    """The change log's last (kind, user, state)."""
    Change = parts(app).storage.models.Change
    with parts(app).storage.connection():
        return Change.select(Change.kind, Change.user, Change.state).order_by(Change.seq.desc()).tuples().first()


def test_sign_out_signs_the_user_out_as_clear_does_and_answers_the_users(app, client, stream):
    profile = select(client, name="Ada", email="ada@example.com")
    assert json.loads(stream.next_event()[1]) == profile
    response = client.post("/os/sign_out")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == client.get("/users").get_json() == {"iterable": [profile]}
    assert client.get("/user").get_json() == {}
    assert stream.next_event()[1] == "null"
    assert last_change(app) == ("clear", profile["id"], "null")


def test_sign_out_when_nobody_is_signed_in_changes_nothing(app, client):
    before = dump_database(app)
    response = client.post("/os/sign_out")
    assert response.status_code == 200 and response.get_json() == {"iterable": []}
    assert dump_database(app) == before


def test_sign_in_after_sign_out_signs_the_same_user_in_again(client, stream):
    profile = select(client, name="Ada", email="ada@example.com")
    assert client.post("/os/sign_out").status_code == 200
    assert [stream.next_event()[1] for _ in range(2)] == [json.dumps(profile, separators=(",", ":")), "null"]
    response = client.post("/os/sign_in")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == profile == client.get("/user").get_json()["user"]
    assert json.loads(stream.next_event()[1]) == profile


def test_sign_in_with_nobody_to_sign_in_is_511_saying_how_to_sign_in_here(app, client):
    before = dump_database(app)
    response = client.post("/os/sign_in")
    assert response.status_code == 511 and response.mimetype == "application/problem+json"
    detail = response.get_json()["detail"]
    assert "POST /user/select" in detail and "POST /users/authenticate/from_token" in detail
    assert dump_database(app) == before


class SignInAndOut(RuleBasedStateMachine):
    """Sign-ins and sign-outs among selects, token sign-ins, clears and disconnects, checked
    against a model: sign-out is /user/clear answered with the users; sign-in keeps whoever
    is signed in, else signs in the user known here who signed in last, else answers 511."""

    def __init__(self, client):
        super().__init__()
        self.client, self.app = client, client.application
        for user in client.get("/users").get_json()["iterable"]:  # each example starts empty
            assert client.post("/users/%s/disconnect" % user["id"]).status_code == 200
        self.current = None
        self.known = []  # users known here, in the order of their last sign-in

    def signed_in(self, user_id):
        if user_id in self.known:
            self.known.remove(user_id)
        self.known.append(user_id)

    @rule(subject=strategies.sampled_from(SUBJECTS))
    def select(self, subject):
        self.current = select(self.client, subject)["id"]
        self.signed_in(self.current)

    @rule(subject=strategies.sampled_from(SUBJECTS))
    def token_sign_in(self, subject):
        with self.app.app_context():
            self.signed_in(json.loads(store.authenticate_from_claims({"sub": subject}))["id"])

    @rule()
    def clear(self):
        assert self.client.post("/user/clear").status_code == 204
        self.current = None

    @rule(subject=strategies.sampled_from(SUBJECTS))
    def disconnect(self, subject):
        user_id = profile_id_for(subject)
        response = self.client.post("/users/%s/disconnect" % user_id)
        assert response.status_code == (200 if user_id in self.known else 404)
        if user_id in self.known:
            self.known.remove(user_id)
            self.current = None if self.current == user_id else self.current

    @rule()
    def sign_out(self):
        seq = parts(self.app).change_log.last_seq()
        response = self.client.post("/os/sign_out")
        assert response.status_code == 200
        assert response.get_json() == self.client.get("/users").get_json()
        if self.current is None:
            assert parts(self.app).change_log.last_seq() == seq
        else:
            assert last_change(self.app) == ("clear", self.current, "null")
        self.current = None

    @rule()
    def sign_in(self):
        response = self.client.post("/os/sign_in")
        expected = self.current or (self.known[-1] if self.known else None)
        if expected is None:
            assert response.status_code == 511
            return
        assert response.status_code == 200 and response.get_json()["id"] == expected
        if self.current is None:
            self.current = expected
            self.signed_in(expected)

    @invariant()
    def current_user_is_the_model_s(self):
        user = self.client.get("/user").get_json().get("user")
        assert (user or {}).get("id") == self.current


def test_sign_in_and_out_follow_the_model_under_any_sequence(client):
    run_state_machine_as_test(lambda: SignInAndOut(client), settings=settings(
        suppress_health_check=[HealthCheck.too_slow]))
