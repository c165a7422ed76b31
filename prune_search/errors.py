"""User-facing errors: one line that says what is wrong and how to fix it."""


class PruneSearchError(Exception):
    """A mistake in the user's input (a flag, a file, a name).

    The CLI prints the message as a single line and exits with status 2; no traceback.
    """
