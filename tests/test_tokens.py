"""POST /users/authenticate/from_token: only a verified id_token creates or updates a profile."""
import base64
import datetime
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from userservice.mapping import profile_id_for

ISSUER = "https://issuer.example/"
AUDIENCE = "pieces-desktop"
SUBJECT = "auth0|token-user"


class Signer:
    """A key pair of the test's own, published as a one-key JWKS file."""

    def __init__(self, private_key, algorithm, kid):
        self.private_key, self.algorithm, self.kid = private_key, algorithm, kid

    def jwk(self):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[self.algorithm].to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, **overrides):
        now = datetime.datetime.now(datetime.timezone.utc)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "iat": now, "exp": now + datetime.timedelta(minutes=5),
                  "email": "token@x.io", "name": "Token User", "preferred_username": "tokenuser", **overrides}
        claims = {key: value for key, value in claims.items() if value is not None}
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.kid})

    def public_pem(self):
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rsa_signer():
    return Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", "rsa-1")


@pytest.fixture(scope="module")
def ec_signer():
    return Signer(ec.generate_private_key(ec.SECP256R1()), "ES256", "ec-1")


@pytest.fixture
def jwks_path(tmp_path, rsa_signer, ec_signer):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_signer.jwk(), ec_signer.jwk()]}))
    return path


@pytest.fixture
def configured(app_config, jwks_path):
    app_config.update(OIDC_JWKS=str(jwks_path), OIDC_ISSUER=ISSUER, OIDC_AUDIENCE=AUDIENCE)
    return app_config


def token_body(id_token):
    body = {"access_token": "opaque", "token_type": "Bearer", "expires_in": 3600, "scope": "openid"}
    if id_token is not None:
        body["id_token"] = id_token
    return body


def authenticate(client, id_token):
    return client.post("/users/authenticate/from_token", json=token_body(id_token))


def assert_nothing_stored(client):
    assert client.get("/users").get_json() == {"iterable": []}


def unsigned(token):
    """The same claims with `alg: none` and no signature."""
    _header, payload, _signature = token.split(".")
    return "%s.%s." % (b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()), payload)


@pytest.mark.parametrize("signer_name", ["rsa_signer", "ec_signer"])
def test_valid_token_creates_the_profile_from_its_claims(configured, client, request, signer_name):
    signer = request.getfixturevalue(signer_name)
    response = authenticate(client, signer.sign())
    assert response.status_code == 200, response.get_data(as_text=True)
    profile = response.get_json()
    assert profile["id"] == profile_id_for(SUBJECT)
    assert (profile["email"], profile["name"], profile["username"]) == ("token@x.io", "Token User", "tokenuser")
    assert client.get("/users/%s" % profile["id"]).get_json() == profile


def test_valid_token_updates_an_existing_profile(configured, client, rsa_signer):
    selected = client.post("/user/select", json={"user_id": SUBJECT, "nickname": "before"}).get_json()
    profile = authenticate(client, rsa_signer.sign(email="changed@x.io")).get_json()
    assert profile["id"] == selected["id"]
    assert profile["email"] == "changed@x.io"
    assert profile["aesthetics"] == selected["aesthetics"]
    assert len(client.get("/users").get_json()["iterable"]) == 1


def test_token_sign_in_does_not_change_the_current_user(configured, client, rsa_signer):
    assert authenticate(client, rsa_signer.sign()).status_code == 200
    assert client.get("/user").get_json() == {}
    current = client.post("/user/select", json={"user_id": "auth0|someone-else"}).get_json()
    assert authenticate(client, rsa_signer.sign(sub="auth0|third", preferred_username="third")).status_code == 200
    assert client.get("/user").get_json() == {"user": current}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hmac_signed(header, claims, secret):
    """A JWS made by hand, since PyJWT refuses to sign HS256 with a public key."""
    signing_input = "%s.%s" % (b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()))
    return "%s.%s" % (signing_input, b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()))


def forged_tokens(rsa_signer, other_signer):
    now = datetime.datetime.now(datetime.timezone.utc)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "exp": int((now + datetime.timedelta(minutes=5)).timestamp())}
    hs256_with_public_key = hmac_signed({"alg": "HS256", "typ": "JWT", "kid": rsa_signer.kid}, claims,
                                        rsa_signer.public_pem())
    return {
        "wrong signature": other_signer.sign(),
        "wrong iss": rsa_signer.sign(iss="https://evil.example/"),
        "wrong aud": rsa_signer.sign(aud="someone-else"),
        "expired": rsa_signer.sign(exp=now - datetime.timedelta(minutes=5)),
        "nbf in the future": rsa_signer.sign(nbf=now + datetime.timedelta(minutes=5)),
        "no exp": rsa_signer.sign(exp=None),
        "no sub": rsa_signer.sign(sub=None),
        "alg none": unsigned(rsa_signer.sign()),
        "HS256 with the public key": hs256_with_public_key,
        "not a JWT": "not.a.jwt",
    }


FORGERIES = ["wrong signature", "wrong iss", "wrong aud", "expired", "nbf in the future", "no exp", "no sub",
             "alg none", "HS256 with the public key", "not a JWT"]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_unverifiable_token_is_401_and_stores_nothing(configured, client, rsa_signer, forgery):
    impostor = Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", rsa_signer.kid)
    token = forged_tokens(rsa_signer, impostor)[forgery]
    response = authenticate(client, token)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert token not in response.get_data(as_text=True)
    assert_nothing_stored(client)


def test_token_with_unknown_kid_is_401(configured, client):
    stranger = Signer(ec.generate_private_key(ec.SECP256R1()), "ES256", "unknown-kid")
    assert authenticate(client, stranger.sign()).status_code == 401
    assert_nothing_stored(client)


def test_missing_id_token_is_400_naming_it(configured, client):
    response = authenticate(client, None)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert [param["name"] for param in response.get_json()["invalid-params"]] == ["id_token"]
    assert_nothing_stored(client)


@pytest.mark.parametrize("unset", [("OIDC_JWKS", "OIDC_ISSUER", "OIDC_AUDIENCE"), ("OIDC_JWKS",),
                                   ("OIDC_ISSUER", "OIDC_AUDIENCE")])
def test_not_configured_is_501_naming_the_missing_settings(app_config, jwks_path, request, rsa_signer, unset):
    settings = {"OIDC_JWKS": str(jwks_path), "OIDC_ISSUER": ISSUER, "OIDC_AUDIENCE": AUDIENCE}
    app_config.update({name: value for name, value in settings.items() if name not in unset})
    client = request.getfixturevalue("client")
    response = authenticate(client, rsa_signer.sign())
    assert response.status_code == 501
    detail = response.get_json()["detail"]
    assert [name for name in settings if "USERSERVICE_" + name in detail] == list(unset)
    assert_nothing_stored(client)


def test_unreadable_jwks_is_503_and_stores_nothing(configured, client, jwks_path, rsa_signer):
    jwks_path.unlink()
    response = authenticate(client, rsa_signer.sign())
    assert response.status_code == 503
    assert_nothing_stored(client)


# --- sign-in rules (issue 11): the token's claims are authoritative for what they carry -----


def test_token_sign_in_keeps_what_the_claims_do_not_carry(configured, client, rsa_signer):
    selected = client.post("/user/select", json={"user_id": SUBJECT, "nickname": "before", "email": "b@x.io",
                                                 "name": "Before", "picture": "https://p"}).get_json()
    profile = authenticate(client, rsa_signer.sign(email=None, name=None, preferred_username=None)).get_json()
    assert {key: value for key, value in profile.items() if key != "updated"} == {
        key: value for key, value in selected.items() if key != "updated"}


def test_token_username_another_user_holds_is_not_taken(configured, client, rsa_signer):
    holder = client.post("/user/select", json={"user_id": "auth0|holder", "nickname": "TokenUser"}).get_json()
    response = authenticate(client, rsa_signer.sign())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "username" not in response.get_json()
    assert client.get("/users/%s" % holder["id"]).get_json()["username"] == "TokenUser"


def test_token_username_another_user_holds_keeps_the_stored_one(configured, client, rsa_signer):
    client.post("/user/select", json={"user_id": SUBJECT, "nickname": "mine"})
    client.post("/user/select", json={"user_id": "auth0|holder", "nickname": "tokenuser"})
    assert authenticate(client, rsa_signer.sign()).get_json()["username"] == "mine"


def test_token_with_sub_longer_than_255_is_401_and_stores_nothing(configured, client, rsa_signer):
    response = authenticate(client, rsa_signer.sign(sub="s" * 256))
    assert response.status_code == 401, response.get_data(as_text=True)
    assert "sub" in response.get_json()["detail"]
    assert_nothing_stored(client)
    assert authenticate(client, rsa_signer.sign(sub="s" * 255)).status_code == 200
