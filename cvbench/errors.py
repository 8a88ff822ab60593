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
    """One image file could not be decoded; carries the path. `skippable`: --skip-bad skips
    it (an image of a split), so the message suggests that."""

    def __init__(self, path, reason: str = "", skippable: bool = True):
        self.path = str(path)
        self.reason = reason
        self.skippable = skippable
        super().__init__(f"cannot decode image {self.path}" + (f": {reason}" if reason else "")
                         + ("; --skip-bad skips such images (counted in the record)" if skippable else ""))

    def __reduce__(self):  # rebuilt from its fields when it crosses a process (joblib)
        return type(self), (self.path, self.reason, self.skippable)
