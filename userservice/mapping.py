"""How outside identities (an Auth0 user, a verified token's claims) become UserProfiles.

Pure functions on loaded (Python) data, so the rules are testable without a database.
"""
import copy
import uuid

from .schemas import PROVIDER_TYPES

# Fixed for ever: the same Auth0 user_id must map to the same profile id on every device.
AUTH0_NAMESPACE = uuid.UUID("5f0c4a52-1d0e-4c1f-9a0b-6b7e2d4f8a31")
DEFAULT_AESTHETICS = {"theme": {"dark": False}, "font": {"size": 14}}


def profile_id_for(subject):
    """A stable UUID for an Auth0 user_id (or a token's `sub`)."""
    return str(uuid.uuid5(AUTH0_NAMESPACE, subject))


def timestamp(moment):
    return {"value": moment}


def keep_device_settings(profile, existing):
    """A user already on this device keeps its aesthetics and allocation; a new one gets defaults."""
    if existing is None:
        profile["aesthetics"] = copy.deepcopy(DEFAULT_AESTHETICS)
        return profile
    profile["aesthetics"] = existing["aesthetics"]
    if "allocation" in existing:
        profile["allocation"] = existing["allocation"]
    return profile


def providers_from_identities(identities, existing, now):
    """Auth0 identities become ExternalProviders; a known provider keeps its `created`."""
    known = {
        (p["type"], p["user_id"]): p["created"]
        for p in ((existing or {}).get("providers") or {}).get("iterable", [])
    }
    providers = []
    for identity in identities:
        kind, user_id = identity.get("provider"), identity.get("user_id")
        if kind not in PROVIDER_TYPES or not user_id:
            continue
        provider = {
            "type": kind,
            "user_id": user_id,
            "created": known.get((kind, user_id), timestamp(now)),
            "updated": timestamp(now),
        }
        for key in ("access_token", "expires_in", "connection", "is_social"):
            if key in identity:
                provider[key] = identity[key]
        providers.append(provider)
    return {"iterable": providers}


def profile_from_auth0(auth0_user, existing, now):
    """Map an Auth0 user onto a UserProfile (see the select rules in README.md)."""
    metadata = auth0_user.get("user_metadata")
    profile = {
        "id": (metadata or {}).get("global_id") or profile_id_for(auth0_user["user_id"]),
        "created": timestamp(auth0_user.get("created_at") or now),
        "updated": timestamp(auth0_user.get("updated_at") or now),
    }
    if existing and "created" in existing and "created_at" not in auth0_user:
        profile["created"] = existing["created"]
    for key in ("email", "name", "picture"):
        if key in auth0_user:
            profile[key] = auth0_user[key]
    username = auth0_user.get("username") or auth0_user.get("nickname")
    if username:
        profile["username"] = username
    if metadata:
        profile["auth0"] = metadata
        if "vanityname" in metadata:
            profile["vanityname"] = metadata["vanityname"]
    if "identities" in auth0_user:
        profile["providers"] = providers_from_identities(auth0_user["identities"], existing, now)
    return keep_device_settings(profile, existing)


def profile_from_claims(claims, existing, now):
    """Create or refresh a profile from a verified ID token's standard OIDC claims."""
    profile = dict(existing) if existing else {
        "id": profile_id_for(claims["sub"]),
        "created": timestamp(now),
    }
    profile["updated"] = timestamp(now)
    for key in ("email", "name", "picture"):
        if isinstance(claims.get(key), str):
            profile[key] = claims[key]
    username = claims.get("preferred_username") or claims.get("nickname")
    if isinstance(username, str) and username:
        profile["username"] = username
    return keep_device_settings(profile, existing)
