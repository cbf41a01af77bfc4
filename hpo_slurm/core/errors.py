"""Errors that reach the user as one line and exit status 2."""


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2, no traceback."""


class ConfigError(UserError):
    """A bad experiment config. The message names the file, the key path and what was expected:

    ``search.yaml: searcher.max_trials: expected a positive integer, got -3``
    """

    def __init__(self, source: str, path: str, message: str):
        self.source = source
        self.path = path
        self.detail = message
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + message)
