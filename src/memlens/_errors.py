"""Bad input to the command line: each error's message is the one line
the user sees (``memlens: error: <message>``, exit status 2). Kept apart
so that ``memlens run`` catches them without importing the readers of
data files or the plotting."""


class UsageError(Exception):
    """A bad input: one clear line, exit status 2."""
