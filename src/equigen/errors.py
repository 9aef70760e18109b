"""The one exception type the CLI shows to a user as a single line instead of a traceback."""


class EquigenError(Exception):
    """A problem the user can fix: bad input, a missing model, an invalid config.

    The message must say what was wrong (file, key, value) and what would be valid.
    """
