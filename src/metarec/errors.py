"""Errors a user can act on: each message says what was wrong and how to fix it."""


class MetarecError(Exception):
    """Base class: the CLI prints these without a traceback."""


class DataError(MetarecError):
    """A data file or frame is malformed, incomplete or inconsistent."""


class ConfigError(MetarecError):
    """An experiment config is invalid."""
