"""How outside identities (an Auth0 user, a verified token's claims) become UserProfiles.

Pure functions on loaded (Python) data, so the rules are testable without a database. A
sign-in is authoritative for what it carries, and only for that: a user already on the
device keeps every stored field the payload does not carry (README.md, "Sign-in rules").
Whether a name another user holds may be taken is the store's to decide (store.py).
"""
import copy
import uuid

from .schemas import PROVIDER_TYPES

# Fixed for ever: the same Auth0 user_id must map to the same profile id on every device.
AUTH0_NAMESPACE = uuid.UUID("5f0c4a52-1d0e-4c1f-9a0b-6b7e2d4f8a31")
DEFAULT_AESTHETICS = {"theme": {"dark": False}, "font": {"size": 14}}
CARRIED = ("email", "name", "picture")  # copied from a sign-in when it carries them


def profile_id_for(subject):
    """A stable UUID for an Auth0 user_id (or a token's `sub`)."""
    return str(uuid.uuid5(AUTH0_NAMESPACE, subject))


def timestamp(moment):
    return {"value": moment}


def starting_point(existing, new_id, now):
    """The stored profile to change, or a new one with the default aesthetics."""
    if existing is not None:
        return copy.deepcopy(existing)
    return {"id": new_id, "created": timestamp(now), "aesthetics": copy.deepcopy(DEFAULT_AESTHETICS)}


def providers_from_identities(identities, existing, now):
    """Auth0 identities become ExternalProviders (a known one keeps its `created`); stored
    providers the identities do not list are kept after them."""
    stored = ((existing or {}).get("providers") or {}).get("iterable", [])
    known = {(p["type"], p["user_id"]): p["created"] for p in stored}
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
    listed = {(p["type"], p["user_id"]) for p in providers}
    providers.extend(p for p in stored if (p["type"], p["user_id"]) not in listed)
    return {"iterable": providers}


def profile_from_auth0(auth0_user, existing, now):
    """Map an Auth0 user onto its stored profile, or a new one whose id is
    user_metadata.global_id, else derived from user_id."""
    metadata = auth0_user.get("user_metadata")
    new_id = (metadata or {}).get("global_id") or profile_id_for(auth0_user["user_id"])
    profile = starting_point(existing, new_id, now)
    if "created_at" in auth0_user:
        profile["created"] = timestamp(auth0_user["created_at"])
    profile["updated"] = timestamp(auth0_user.get("updated_at") or now)
    for key in CARRIED:
        if key in auth0_user:
            profile[key] = auth0_user[key]
    username = auth0_user.get("username") or auth0_user.get("nickname")
    if username:
        profile["username"] = username
    if metadata:
        profile["auth0"] = {**profile.get("auth0", {}), **metadata}
        if "vanityname" in metadata:
            profile["vanityname"] = metadata["vanityname"]
    if "identities" in auth0_user:
        profile["providers"] = providers_from_identities(auth0_user["identities"], existing, now)
    return profile


def profile_from_claims(claims, existing, now):
    """Create or refresh a profile from a verified ID token's standard OIDC claims."""
    profile = starting_point(existing, profile_id_for(claims["sub"]), now)
    profile["updated"] = timestamp(now)
    for key in CARRIED:
        if isinstance(claims.get(key), str):
            profile[key] = claims[key]
    username = claims.get("preferred_username") or claims.get("nickname")
    if isinstance(username, str) and username:
        profile["username"] = username
    return profile


def keep_stored(profile, existing, fields):
    """Put back the stored value (or none) of each field a sign-in may not take."""
    for field in fields:
        if existing is not None and field in existing:
            profile[field] = existing[field]
        else:
            profile.pop(field, None)


def vanity_url(name, cloud_domain):
    return "https://%s.%s" % (name, cloud_domain)


def vanity_url_of(profile):
    vanity = ((profile.get("allocation") or {}).get("urls") or {}).get("vanity")
    return vanity["url"] if vanity else None


def align_vanity(profile, cloud_domain):
    """Vanity names are lower-case, and a vanity URL is always its vanity name's: rewritten
    when the name changed, removed with the name."""
    name = profile.get("vanityname")
    if name:
        profile["vanityname"] = name = name.lower()
    urls = (profile.get("allocation") or {}).get("urls") or {}
    if "vanity" not in urls:
        return
    if name:
        urls["vanity"]["url"] = vanity_url(name, cloud_domain)
    else:
        del urls["vanity"]
