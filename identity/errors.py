"""The error hierarchy of idgraph.

Every error raised on purpose derives from :class:`IdGraphError`. Errors carry machine-readable
attributes (a reason code, a field path) and human-readable messages. **No message or attribute
ever contains a raw identifier value**: errors end up in logs and HTTP error bodies, and both are
places where raw identifiers must never appear (privacy invariant 1).
"""

from __future__ import annotations

from collections.abc import Collection


class IdGraphError(Exception):
    """Root of every error idgraph raises on purpose."""

    code: str = "idgraph-error"


class PolicyFileError(IdGraphError):
    """A policy file is missing, unreadable or invalid; names the file and the field."""

    code = "policy-file-invalid"

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file = file
        self.field = field
        super().__init__(f"{file}: {field}: {message}")


class ConfigurationError(IdGraphError):
    """The service is configured in a way it refuses to run with (e.g. a dev key in production)."""

    code = "configuration-invalid"


class InvalidFieldError(IdGraphError):
    """One input field is invalid. ``reason`` is a code; ``message`` never holds the value.

    ``field`` is a JSON pointer (``#/traits/city``) once the caller has located the error.
    """

    code = "invalid-field"

    def __init__(self, reason: str, message: str, field: str = "") -> None:
        self.reason = reason
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)

    def at(self, field: str) -> InvalidFieldError:
        """Return a copy of this error located at ``field`` (a JSON pointer)."""
        return InvalidFieldError(self.reason, self.message, field)


class InvalidIdentifierError(InvalidFieldError):
    """An identifier value does not normalize."""

    code = "invalid-identifier"

    def __init__(self, identifier_type: str, reason: str, message: str, field: str = "") -> None:
        self.identifier_type = identifier_type
        super().__init__(reason, message, field)

    def at(self, field: str) -> InvalidIdentifierError:
        """Return a copy of this error located at ``field`` (a JSON pointer)."""
        return InvalidIdentifierError(self.identifier_type, self.reason, self.message, field)


class UnknownIdentifierTypeError(InvalidIdentifierError):
    """The identifier type is not declared in ``policies/identity.yaml``."""

    code = "unknown-identifier-type"

    def __init__(self, identifier_type: str, known: tuple[str, ...], field: str = "") -> None:
        # The type name is caller-chosen but it is a schema token, not personal data; it is
        # truncated so a value pasted into the type field does not travel far.
        shown = identifier_type[:40]
        super().__init__(
            shown,
            "unknown_type",
            f"unknown identifier type {shown!r}; known types: {', '.join(known)}",
            field,
        )
        self.known = known

    def at(self, field: str) -> UnknownIdentifierTypeError:
        """Return a copy of this error located at ``field``."""
        return UnknownIdentifierTypeError(self.identifier_type, self.known, field)


class BatchValidationError(IdGraphError):
    """Several inputs of one request are invalid; nothing of the request was applied."""

    code = "invalid-batch"

    def __init__(self, errors: list[InvalidFieldError]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} invalid field(s); nothing was written")


class IdentifierNotFoundError(IdGraphError):
    """An identifier named in a request is not in the graph."""

    code = "identifier-not-found"

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(f"{field}: no such identifier in the graph")


class RuleNotFoundError(IdGraphError):
    """No do-not-link rule has the given id (never existed, or already removed)."""

    code = "do-not-link-rule-not-found"

    def __init__(self, rule_id: str) -> None:
        self.rule_id = rule_id
        super().__init__("no do-not-link rule has this id")


class NotLinkedError(IdGraphError):
    """Two identifiers are not directly linked, so there is no link to remove."""

    code = "not-linked"

    def __init__(self, message: str = "the two identifiers are not directly linked") -> None:
        super().__init__(message)


class StoreUnavailableError(IdGraphError):
    """The graph store cannot be reached or refused the operation for a transient reason."""

    code = "store-unavailable"


class CommitOutcomeUnknownError(StoreUnavailableError):
    """The connection to the store was lost while it committed, and whether the write was
    applied could not be found out afterwards (the Neo4j store normally can, and then answers as
    if the commit's answer had arrived: see :mod:`identity.store.neo4j`).

    Never retried by idgraph itself (a second write of what was committed would apply it twice);
    the caller retries, and events that carry a message id are then recognised as duplicates.
    """

    code = "commit-outcome-unknown"


class AnchorKeyDestroyedError(IdGraphError):
    """Some anchors (identifier nodes) have no data key any more: it was crypto-shredded, and a
    shred is irreversible, so nothing can be sealed under them again.

    Raised by a :class:`~identity.resolution.FactSealer` (the vault's
    :class:`~privacy.keys.vault.DataKeyDestroyedError` is this error), caught by the resolution
    engine, which then refuses those identifiers (reason ``shredded``). ``owners`` is for that
    code only: an owner is a node id (``n_...``) of a person whose data was shredded, which no
    message, log line or error body may name (the message counts them).
    """

    code = "data-key-destroyed"

    def __init__(self, owners: Collection[str]) -> None:
        self.owners = tuple(sorted(owners))
        super().__init__(
            f"{len(self.owners)} owner(s) have no data key (shredded or never created)"
        )


class StoreIntegrityError(IdGraphError):
    """The graph store holds data that breaks an invariant (should never happen; report it)."""

    code = "store-integrity"


class InputLimitError(IdGraphError):
    """A request exceeds a configured size limit (events per batch, identifiers per event)."""

    code = "input-limit-exceeded"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
