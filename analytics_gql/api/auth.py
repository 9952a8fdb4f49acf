"""API keys: read from headers only, compared in constant time, mapped to scopes before any body is read."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl

from analytics_gql.settings import SCOPES, ApiKey

ALL_SCOPES = frozenset(SCOPES)
# Query-string names a client might put a key under; URLs end up in logs and browser history, so refuse them.
_URL_KEY_NAMES = frozenset({"key", "api_key", "apikey", "api-key", "access_token", "token", "x-api-key"})


@dataclass(frozen=True)
class Caller:
    """Who is calling: authenticated or not, and with which scopes."""

    authenticated: bool
    scopes: frozenset[str]
    problem: str | None = None  # why authentication failed, safe to show
    key_name: str | None = None  # the matched key's fingerprint (ApiKey.name), for logs; None when open


OPEN = Caller(True, ALL_SCOPES)


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key from `Authorization: Bearer KEY` or `X-API-Key: KEY` (lower-cased raw ASGI header names)."""
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, value = auth.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    if key is not None and key.strip():
        return key.decode("latin-1").strip()
    return None


def key_in_query_string(query_string: bytes) -> bool:
    """True when the URL carries something that looks like a key."""
    if not query_string:
        return False
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return False
    return any(name.lower() in _URL_KEY_NAMES for name, _ in pairs)


def match_key(keys: tuple[ApiKey, ...], presented: str) -> ApiKey | None:
    """The configured key equal to `presented`, comparing against every key in constant time."""
    given = presented.encode("utf-8", "surrogatepass")
    found: ApiKey | None = None
    for candidate in keys:
        # No early exit: the time taken does not reveal which key (or how much of one) matched.
        if hmac.compare_digest(candidate.key.encode("utf-8"), given):
            found = candidate
    return found


def authenticate(keys: tuple[ApiKey, ...], headers: dict[bytes, bytes], query_string: bytes) -> Caller:
    """Decide who the caller is from headers alone (no body has been read)."""
    if key_in_query_string(query_string):
        return Caller(False, frozenset(), "API keys are not accepted in the URL; send them in a header")
    if not keys:
        return OPEN
    presented = presented_key(headers)
    if presented is None:
        return Caller(False, frozenset(),
                      "an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    match = match_key(keys, presented)
    if match is None:
        return Caller(False, frozenset(), "the API key is not valid")
    return Caller(True, match.scopes, key_name=match.name)
