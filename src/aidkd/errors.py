"""User-facing errors.

A :class:`UserError` is a problem with what the user asked for (a missing file, a bad config value, an unknown
name). The CLI prints its message on one line and exits with code 2, without a traceback. Messages name the
problem and the fix.
"""


class UserError(Exception):
    """A mistake in the user's input; the message says what is wrong and how to fix it."""
