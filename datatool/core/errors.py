"""User-facing errors. Each message names the file and, where there is one, the field."""


class DatatoolError(Exception):
    """Something the user can fix; the CLI prints the message without a traceback."""


class AnnotationError(DatatoolError):
    """An annotation file that cannot be read: `'x.json': shapes[3]: rectangle needs 2 points`."""


class ImageError(DatatoolError):
    """An image that is missing, unreadable, corrupt or too large."""


class RecipeError(DatatoolError):
    """An augmentation recipe that cannot be loaded."""


class OutputExistsError(DatatoolError):
    """Refusing to overwrite user data without --overwrite."""
