"""Exceptions odkit raises for problems a user must act on (bad input, bad arguments)."""


class OdkitError(Exception):
    """A user-facing error: the message names the file, annotation or argument and what is wrong.

    The CLI prints it without a traceback and exits with status 2.
    """


class DataError(OdkitError):
    """A dataset file cannot be read or is malformed."""


class ConfigError(OdkitError):
    """An argument, config or model name is invalid."""
