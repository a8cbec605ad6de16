"""The one exception type a user sees: a one-line message, exit code 2 from the CLI."""


class HarnessError(Exception):
    """Bad input or environment the user can fix; its message is a single line."""

    exit_code = 2


def warn(message: str) -> None:
    """One line on stderr for something repaired on the way (a torn line cut, a damaged checkpoint skipped)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


class Interrupted(HarnessError):
    """A run stopped on request (SIGINT/SIGTERM) after saving what it did; exit code 128 + the signal."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
