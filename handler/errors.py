"""Errors as values: a stage of an item (fetch, decode, write...) fails with a stable ErrorCode."""

from __future__ import annotations

from stenopod.schema import ErrorCode, ItemError


class StageError(Exception):
    """One item's stage failed for a reason the user can act on; job.py turns it into an ItemError.

    The message is shown to the user: it must never carry credentials or presigned query strings.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[StageError], tuple[ErrorCode, str]]:
        # Raised in a decoding process (handler.decode_pool) and re-raised here: it must pickle.
        return (StageError, (self.code, self.message))

    def to_item_error(self) -> ItemError:
        return ItemError(code=self.code, message=self.message)
