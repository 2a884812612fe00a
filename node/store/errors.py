"""What the store raises: ``StoreError`` and its kinds."""

from __future__ import annotations


class StoreError(Exception):
    """The store could not do what was asked; the message says what was being done."""


class StateConflict(StoreError):
    """A compare-and-set lost: the record was not in an ``expected`` state.

    ``current`` is the state found, so a caller can decide whether it still cares.
    """

    def __init__(self, message: str, *, current: str) -> None:
        super().__init__(message)
        self.current = current


class NotFound(StoreError):
    """The job or execution to update does not exist."""


class AlreadyExists(StoreError):
    """A job or execution with that ID is already stored."""


class ResultConflict(StoreError):
    """A different result envelope is already stored for that execution."""


