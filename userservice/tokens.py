"""Verification of OIDC ID tokens: signature against a JWKS, then iss, aud, exp and nbf.

Only asymmetric algorithms are accepted, so neither `none` nor an HMAC signature made
with a public key can pass. Token values are never logged or echoed back.
"""
import os

from .problems import Problem
from .schemas import MAX_ID

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
JWKS_CACHE_SECONDS = 300
SETTINGS = ("OIDC_JWKS", "OIDC_ISSUER", "OIDC_AUDIENCE")
MAX_SUBJECT = MAX_ID  # OpenID Connect Core: a `sub` "MUST NOT exceed 255 ASCII characters"


def pyjwt():
    """PyJWT, imported when first used: it imports ssl, which a gunicorn master must not do
    before its gevent workers have patched it."""
    import jwt

    return jwt


class Keys:
    """One app's signing keys: a JWKS over https (fetched by PyJWT, kept JWKS_CACHE_SECONDS)
    or a JWKS file (read again only when its modification time changes)."""

    def __init__(self, source):
        self.source = source
        self.remote = (pyjwt().PyJWKClient(source, cache_jwk_set=True, lifespan=JWKS_CACHE_SECONDS)
                       if source.startswith("https://") else None)
        self.file = (None, None)  # (modification time, PyJWKSet)

    def file_keys(self):
        modified = os.stat(self.source).st_mtime_ns
        if self.file[0] != modified:
            with open(self.source, encoding="utf-8") as handle:
                self.file = (modified, pyjwt().PyJWKSet.from_json(handle.read()))
        return self.file[1].keys

    def load(self):
        """Every key, fetched or read now: a check that the source works."""
        return self.remote.get_signing_keys() if self.remote is not None else self.file_keys()

    def signing_key(self, token):
        if self.remote is not None:
            return self.remote.get_signing_key_from_jwt(token)
        key_id = pyjwt().get_unverified_header(token).get("kid")
        keys = self.file_keys()
        matching = [key for key in keys if key.key_id == key_id or (key_id is None and len(keys) == 1)]
        if not matching:
            raise pyjwt().InvalidTokenError("no key in the JWKS matches the token's kid")
        return matching[0]


def keys_for(config):
    """The keys the app's settings name, or None when token sign-in is not configured."""
    return Keys(config["OIDC_JWKS"]) if config.get("OIDC_JWKS") else None


def verify(id_token, config, keys):
    """The claims of a verified `id_token`; a Problem (400/401/501/503) otherwise."""
    missing = ["USERSERVICE_" + name for name in SETTINGS if not config.get(name)]
    if missing:
        raise Problem(501, "Token sign-in is not configured on this server: set %s." % ", ".join(missing))
    if not id_token:
        raise Problem(400, "An id_token is required: the profile is built from its verified claims.",
                      invalid_params=[{"name": "id_token", "reason": "Missing data for required field."}])
    try:
        key = keys.signing_key(id_token)
        if key.key_type == "oct":
            raise pyjwt().InvalidKeyError("symmetric keys are not accepted")
        claims = pyjwt().decode(
            id_token, key.key, algorithms=ALGORITHMS,
            audience=config["OIDC_AUDIENCE"], issuer=config["OIDC_ISSUER"],
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except (pyjwt().PyJWTError, ValueError) as error:
        raise Problem(401, "The id_token failed verification: %s." % type(error).__name__) from None
    except OSError:
        raise Problem(503, "The configured JWKS could not be read.") from None
    if not isinstance(claims["sub"], str) or not 0 < len(claims["sub"]) <= MAX_SUBJECT:
        raise Problem(401, "The id_token failed verification: its sub is not 1 to %d characters." % MAX_SUBJECT)
    return claims
