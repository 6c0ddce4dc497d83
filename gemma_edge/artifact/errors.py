"""The one exception type users see: its message is a complete one-line explanation."""


class GemmaEdgeError(Exception):
    """A problem with the user's input or files; the CLI prints it as one line and exits 2."""
