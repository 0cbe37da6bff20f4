"""User-facing errors. Each message names the file and, where there is one, the field.

An error carries its parts - `path`, `field`, `reason` and a machine-readable `code` - so
code that collects problems (`Issue.from_error`) never parses them back out of the message.
`str(e)` is the full message: `path: field: reason` (labelme files: `failed to load 'path':
field: reason`, as labelme itself words it).
"""

from __future__ import annotations


class DatatoolError(Exception):
    """Something the user can fix; the CLI prints the message without a traceback.

    Either a plain message (`DatatoolError("--ratios: expected three numbers")`) or its parts
    (`ImageError(path=p, reason="image not found")`); `reason` defaults to the message.
    """

    code = ""  # default machine-readable kind for the class; an instance may name its own

    def __init__(self, message: str | None = None, *, path=None, field: str = "", reason: str | None = None,
                 code: str | None = None):
        self.path = str(path) if path is not None else ""
        self.field = field or ""
        self.reason = reason if reason is not None else (message or "")
        if code is not None:
            self.code = code
        super().__init__(message if message is not None else self._compose())

    def _compose(self) -> str:
        return ": ".join(part for part in (self.path, self.field, self.reason) if part)


class AnnotationError(DatatoolError):
    """An annotation file that cannot be read: `failed to load 'x.json': shapes[3]: rectangle needs 2 points`."""

    code = "bad-annotation"


class LabelmeLoadError(AnnotationError):
    """A labelme JSON that cannot be loaded; worded as labelme words it."""

    code = "bad-json"

    def _compose(self) -> str:
        inner = ": ".join(part for part in (self.field, self.reason) if part)
        return f"failed to load '{self.path}': {inner}"


class ImageError(DatatoolError):
    """An image that is missing, unreadable, corrupt or too large."""

    code = "bad-image"


class RecipeError(DatatoolError):
    """An augmentation recipe that cannot be loaded."""


class OutputExistsError(DatatoolError):
    """Refusing to overwrite user data without --overwrite."""
