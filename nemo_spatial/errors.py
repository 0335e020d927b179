"""Exceptions shared across the package, in a module that imports nothing (so every config can use them).

`UserError` is the family of mistakes a user mends by changing a value (a config key, a path, a flag): every
entry point prints them as one line, `error: <message>`, and exits with status 2 (`nemo_spatial.cli`). Their
messages name the bad value and the fix. Anything else is a bug or a failure of the environment and keeps its
traceback.
"""


class UserError(Exception):
    """A mistake the user fixes by changing an input; the message names the value and the fix."""


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message names the full key (`generation.sampling.n`) and the fix."""
