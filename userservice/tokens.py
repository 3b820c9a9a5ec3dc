"""Verification of OIDC ID tokens: signature against a JWKS, then iss, aud, exp and nbf.

Only asymmetric algorithms are accepted, so neither `none` nor an HMAC signature made
with a public key can pass. Token values are never logged or echoed back.
"""
import functools
import os

import jwt

from .errors import Problem

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
JWKS_CACHE_SECONDS = 300
SETTINGS = ("OIDC_JWKS", "OIDC_ISSUER", "OIDC_AUDIENCE")


@functools.lru_cache(maxsize=8)
def remote_keys(url):
    """A JWKS fetched over https, cached for JWKS_CACHE_SECONDS by PyJWT."""
    return jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=JWKS_CACHE_SECONDS)


@functools.lru_cache(maxsize=8)
def file_keys(path, modified):
    """A JWKS file, read again only when its modification time changes."""
    with open(path, encoding="utf-8") as handle:
        return jwt.PyJWKSet.from_json(handle.read())


def signing_key(source, token):
    if source.startswith("https://"):
        return remote_keys(source).get_signing_key_from_jwt(token)
    key_id = jwt.get_unverified_header(token).get("kid")
    keys = file_keys(source, os.stat(source).st_mtime_ns).keys
    matching = [key for key in keys if key.key_id == key_id or (key_id is None and len(keys) == 1)]
    if not matching:
        raise jwt.InvalidTokenError("no key in the JWKS matches the token's kid")
    return matching[0]


def verify(id_token, config):
    """The claims of a verified `id_token`; a Problem (400/401/501) otherwise."""
    missing = ["USERSERVICE_" + name for name in SETTINGS if not config.get(name)]
    if missing:
        raise Problem(501, "Token sign-in is not configured on this server: set %s." % ", ".join(missing))
    if not id_token:
        raise Problem(400, "An id_token is required: the profile is built from its verified claims.",
                      invalid_params=[{"name": "id_token", "reason": "Missing data for required field."}])
    try:
        key = signing_key(config["OIDC_JWKS"], id_token)
        if key.key_type == "oct":
            raise jwt.InvalidKeyError("symmetric keys are not accepted")
        return jwt.decode(
            id_token, key.key, algorithms=ALGORITHMS,
            audience=config["OIDC_AUDIENCE"], issuer=config["OIDC_ISSUER"],
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except (jwt.PyJWTError, ValueError) as error:
        raise Problem(401, "The id_token failed verification: %s." % type(error).__name__) from None
    except OSError:
        raise Problem(503, "The configured JWKS could not be read.") from None
