"""User-facing errors: the CLI turns them into one sentence on stderr and exit code 2."""


class UserError(Exception):
    """A mistake the user can fix (missing data, bad layout, unknown name, bad parameter).

    The message is one clear sentence naming the file or value and what was expected;
    the CLI prints it without a traceback and exits with code 2.
    """

    exit_code = 2


class DataError(UserError):
    """The data on disk is missing, in the wrong layout, or unreadable."""


class BadImageError(DataError):
    """One image file could not be decoded; carries the path."""

    def __init__(self, path, reason: str = ""):
        self.path = str(path)
        super().__init__(f"cannot decode image {self.path}" + (f": {reason}" if reason else ""))
