"""Marshmallow schemas for every wire model of the User and Users APIs.

Python attribute names are snake_case; `data_key` gives the wire name. Loading accepts the
union of what the 4.x and 5.x SDKs send (unknown keys are dropped, never an error); dumping
emits only enum values both SDK generations can parse, because one unknown value makes a
client reject the whole profile.
"""
import datetime
import json

from marshmallow import ValidationError, fields, post_dump, validate, validates_schema

from .wire import Bool, DateTime, FullMatch, Int, List, Nested, Str, WireSchema, optional

SEMANTIC_VERSION = "MAJOR_0_MINOR_0_PATCH_1"
ALLOCATION_STATUSES = ("PENDING", "RUNNING", "FAILED", "SUCCEEDED", "UNKNOWN")
# Provider types both SDK generations accept; 4.x also knows `auth0`, 5.x many more.
PROVIDER_TYPES = ("github", "google-oauth2", "bitbucket", "linkedin", "twitter", "facebook", "waad")
PROVIDER_TYPES_ACCEPTED = PROVIDER_TYPES + (
    "auth0", "UNKNOWN", "discord", "gitlab", "apple", "username_email", "slack", "microsoft")
# Ids are at most this long: a profile id is a path segment and a key column, and OIDC caps
# a `sub` (which an Auth0 user_id becomes) at 255 characters.
MAX_ID = 255


class EmbeddedModelSchemaSchema(WireSchema):
    migration = Int(required=True)
    semantic = Str(required=True, validate=validate.OneOf((SEMANTIC_VERSION, "UNKNOWN")))

    @post_dump
    def known_version(self, data, **kwargs):
        return {**data, "semantic": SEMANTIC_VERSION}


class Versioned(WireSchema):
    """Every model may carry the optional `schema` version object."""

    model_schema = optional(Nested, EmbeddedModelSchemaSchema, data_key="schema")


class GroupedTimestampSchema(Versioned):
    value = DateTime(required=True)
    readable = optional(Str)


def Timestamp(**kwargs):
    kwargs.setdefault("allow_none", not kwargs.get("required"))
    return Nested(GroupedTimestampSchema, **kwargs)


class ThemeSchema(Versioned):
    dark = Bool(required=True)


class FontSchema(Versioned):
    size = Int(required=True, validate=validate.Range(min=1, max=1000))


class AestheticsSchema(Versioned):
    theme = Nested(ThemeSchema, required=True)
    font = Nested(FontSchema, required=True)


def AllocationStatus(**kwargs):
    return Str(validate=validate.OneOf(ALLOCATION_STATUSES + ("DISCONNECTED",)), **kwargs)


def known_allocation_status(value):
    return value if value in ALLOCATION_STATUSES else "UNKNOWN"


class AllocationCloudUrlSchema(Versioned):
    status = AllocationStatus(required=True)
    url = Str(required=True)

    @post_dump
    def known_status(self, data, **kwargs):
        return {**data, "status": known_allocation_status(data["status"])}


class AllocationCloudUrlsSchema(Versioned):
    base = Nested(AllocationCloudUrlSchema, required=True)
    id = Nested(AllocationCloudUrlSchema, required=True)
    vanity = optional(Nested, AllocationCloudUrlSchema)


class AllocationCloudStatusSchema(Versioned):
    cloud = AllocationStatus(required=True)

    @post_dump
    def known_status(self, data, **kwargs):
        return {**data, "cloud": known_allocation_status(data["cloud"])}


class AllocationCloudSchema(Versioned):
    id = Str(required=True)
    user = Str(required=True)
    urls = Nested(AllocationCloudUrlsSchema, required=True)
    status = Nested(AllocationCloudStatusSchema, required=True)
    project = Str(required=True)
    updated = Timestamp()
    version = optional(Str)
    region = optional(Str)


PROFILE_DATA_STRINGS = (
    "name picture nickname email node_id gravatar_id url html_url followers_url following_url "
    "gists_url starred_url subscriptions_url organizations_url repos_url events_url "
    "received_events_url type company blog anchor bio twitter_username created_at updated_at"
).split()
PROFILE_DATA_INTEGERS = (
    "public_repos public_gists followers following private_gists total_private_repos "
    "owned_private_repos disk_usage collaborators"
).split()
PROFILE_DATA_BOOLEANS = "email_verified site_admin hireable two_factor_authentication".split()

ExternalProviderProfileDataSchema = WireSchema.from_dict(
    {name: optional(Str) for name in PROFILE_DATA_STRINGS}
    | {name: optional(Int) for name in PROFILE_DATA_INTEGERS}
    | {name: optional(Bool) for name in PROFILE_DATA_BOOLEANS},
    name="ExternalProviderProfileDataSchema",
)


class ExternalProviderSchema(Versioned):
    type = Str(required=True, validate=validate.OneOf(PROVIDER_TYPES_ACCEPTED))
    user_id = Str(required=True)
    access_token = optional(Str)
    expires_in = optional(Int)
    created = Timestamp(required=True)
    updated = Timestamp(required=True)
    profile_data = optional(Nested, ExternalProviderProfileDataSchema, data_key="profileData")
    connection = optional(Str)
    is_social = optional(Bool, data_key="isSocial")


class ExternalProvidersSchema(Versioned):
    iterable = List(Nested(ExternalProviderSchema), required=True)

    @post_dump
    def parseable_by_every_sdk(self, data, **kwargs):
        """Leave out providers whose type one SDK generation would reject."""
        return {**data, "iterable": [p for p in data["iterable"] if p["type"] in PROVIDER_TYPES]}


class Auth0UserAllocationMetadataSchema(WireSchema):
    project = Str(required=True)
    region = Str(required=True)


class Auth0OpenAIUserMetadataSchema(Versioned):
    api_key = optional(Str)
    api_key_name = optional(Str)
    organization_key = optional(Str)


def as_utc(moment):
    """Naive timestamps are taken as UTC, so naive and aware ones can be compared."""
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


class AnonymousTemporalRangeSchema(Versioned):
    from_ = Timestamp(data_key="from")
    to = Timestamp()
    between = optional(Bool)
    continuous = optional(Bool)

    @validates_schema
    def from_not_after_to(self, data, **kwargs):
        start, end = data.get("from_"), data.get("to")
        if start and end and as_utc(start["value"]) > as_utc(end["value"]):
            raise ValidationError("must not be after `to`.", "from")


class Auth0UserMetadataSchema(Versioned):
    global_id = Str(required=True)
    cloud_key = optional(Str)
    stripe_customer_id = optional(Str)
    vanityname = optional(Str)
    allocation = optional(Nested, Auth0UserAllocationMetadataSchema)
    open_ai = optional(Nested, Auth0OpenAIUserMetadataSchema, data_key="open_AI")
    beta = optional(Nested, AnonymousTemporalRangeSchema)


class UserProfileSchema(Versioned):
    picture = optional(Str)
    email = optional(Str)
    created = Timestamp()
    updated = Timestamp()
    username = optional(Str)
    id = Str(required=True, validate=validate.Length(min=1, max=MAX_ID))
    name = optional(Str)
    aesthetics = Nested(AestheticsSchema, required=True)
    vanityname = optional(Str)
    allocation = optional(Nested, AllocationCloudSchema)
    providers = optional(Nested, ExternalProvidersSchema)
    auth0 = optional(Nested, Auth0UserMetadataSchema)


class Auth0IdentitySchema(WireSchema):
    connection = optional(Str)
    is_social = optional(Bool, data_key="isSocial")
    provider = optional(Str)
    user_id = optional(Str)
    access_token = optional(Str)
    expires_in = optional(Int)


class Auth0SignInMetadataSchema(Auth0UserMetadataSchema):
    """user_metadata as select reads it: its global_id becomes the profile's id."""

    global_id = Str(required=True, validate=validate.Length(max=MAX_ID))


class Auth0UserSchema(WireSchema):
    name = optional(Str)
    picture = optional(Str)
    email = optional(Str)
    created_at = optional(DateTime)
    email_verified = optional(Bool)
    family_name = optional(Str)
    given_name = optional(Str)
    identities = optional(List, Nested(Auth0IdentitySchema))
    nickname = optional(Str)
    updated_at = optional(DateTime)
    username = optional(Str)
    user_metadata = optional(Nested, Auth0SignInMetadataSchema)
    locale = optional(Str)
    user_id = optional(Str, validate=validate.Length(max=MAX_ID))
    last_ip = optional(Str)
    last_login = optional(DateTime)
    logins_count = optional(Int)
    blocked_for = optional(List, Str())
    guardian_authenticators = optional(List, Str())

    @validates_schema
    def identifies_someone(self, data, **kwargs):
        if not data.get("user_id") and not (data.get("user_metadata") or {}).get("global_id"):
            raise ValidationError("either `user_id` or `user_metadata.global_id` is required.", "user_id")


class Auth0UserBetaStatusSchema(Versioned):
    vision = optional(Nested, AnonymousTemporalRangeSchema)


class UserBetaStatusSchema(Versioned):
    auth0 = optional(Nested, Auth0UserBetaStatusSchema)
    user = Str(required=True, validate=validate.Length(min=1, max=MAX_ID))


class OAuthTokenSchema(Versioned):
    access_token = Str(required=True)
    token_type = Str(required=True, validate=validate.Equal("Bearer"))
    expires_in = Int(required=True)
    scope = optional(Str)  # required by the 4.x SDK's model, optional in 5.x
    refresh_token = optional(Str)
    id_token = optional(Str)


class ReturnedUserProfileSchema(Versioned):
    user = optional(Nested, UserProfileSchema)


class UsersSchema(Versioned):
    iterable = List(Nested(UserProfileSchema))


# A vanity name becomes a host name under CLOUD_DOMAIN: one DNS label (lower-cased when stored).
DNS_LABEL = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"


class VanityRequestSchema(UserProfileSchema):
    vanityname = fields.String(required=True, validate=FullMatch(
        DNS_LABEL, error="not a valid DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'"))


user_profile = UserProfileSchema()
auth0_user = Auth0UserSchema()
user_beta_status = UserBetaStatusSchema()
oauth_token = OAuthTokenSchema()
vanity_request = VanityRequestSchema(partial=("aesthetics",))


def dump_profile(profile):
    """A loaded profile as its wire (JSON-ready) form."""
    return user_profile.dump(profile)


def profile_json(document):
    """The one serialisation of a dumped profile: stored, returned by HTTP and sent on the stream."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def encode_profile(profile):
    return profile_json(dump_profile(profile))


stored_timestamp = GroupedTimestampSchema()
stored_range = AnonymousTemporalRangeSchema()


def decode_kept_fields(text):
    """Only what an update keeps from the stored profile, `created` and `auth0.beta`, loaded
    by their own small schemas: loading the whole document would cost several times more."""
    stored = json.loads(text)
    kept = {}
    if "created" in stored:
        kept["created"] = stored_timestamp.load(stored["created"])
    beta = (stored.get("auth0") or {}).get("beta")
    if beta is not None:
        kept["auth0"] = {"beta": stored_range.load(beta)}
    return kept


def decode_profile(text):
    """A stored profile back to loaded (Python) form, for read-modify-write."""
    return user_profile.load(json.loads(text))
