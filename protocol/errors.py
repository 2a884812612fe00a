"""The protocol's error types.

Two families, as in h11: ``LocalProtocolError`` when *we* (or our user) broke the
rules, ``RemoteProtocolError`` when a peer did. Every error a decoder or verifier
raises on bad bytes is a ``RemoteProtocolError``; nothing else escapes.
"""

from __future__ import annotations

from dataclasses import dataclass


class ProtocolError(Exception):
    """Base of every error this package raises on purpose."""


class LocalProtocolError(ProtocolError):
    """Our own input is invalid: a malformed spec, URI, quantity or selector."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something that breaks the protocol; drop it, penalise the peer."""


# Envelope rejections, one type per reason so callers can count them separately.
class BadSignature(RemoteProtocolError):
    pass


class SenderMismatch(RemoteProtocolError):
    pass


class UnknownVersion(RemoteProtocolError):
    pass


class ClockSkew(RemoteProtocolError):
    pass


class ReplayedMessage(RemoteProtocolError):
    pass


class OversizeMessage(RemoteProtocolError):
    pass


class UnknownMessageType(RemoteProtocolError):
    pass


class MalformedMessage(RemoteProtocolError):
    pass


class IllegalTransition(LocalProtocolError):
    """A state change that the job or execution state machine does not allow."""


@dataclass(frozen=True)
class FieldError:
    """One problem in a document, located by a dotted path such as ``Tasks[0].Engine.Type``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(LocalProtocolError):
    """A job spec (or any document) failed validation; ``errors`` lists every problem."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"invalid job spec ({len(self.errors)} problem(s)):\n{lines}")
