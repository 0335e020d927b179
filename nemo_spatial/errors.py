"""Exceptions shared across the package, in a module that imports nothing (so every config can use them)."""


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the fix."""
