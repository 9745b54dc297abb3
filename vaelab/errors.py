"""The one exception vaelab raises for bad input; the CLI turns it into one stderr line and exit status 2."""


class VaelabError(Exception):
    """A problem with what the user asked for or handed us (never a bug in vaelab)."""
