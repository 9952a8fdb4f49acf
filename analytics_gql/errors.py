"""User errors (safe to show, carry a GraphQL code) versus everything else (masked, logged)."""

from __future__ import annotations


class UserError(Exception):
    """A client mistake with a message a person can act on."""

    code = "BAD_USER_INPUT"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(UserError):
    """Out-of-policy input: a bad zone, range, limit, cursor or code."""


class RetentionError(UserError):
    """A query needs a grain finer than retention keeps for that time."""


class TooManyPoints(UserError):
    """A series would have more points than the limit."""


class Unauthenticated(UserError):
    """No key, or a key that is not known."""

    code = "UNAUTHENTICATED"


class Forbidden(UserError):
    """A known key without the scope the operation needs."""

    code = "FORBIDDEN"


class RebuildRequired(UserError):
    """The rollups were built in another reporting zone; an explicit rebuild is needed."""
