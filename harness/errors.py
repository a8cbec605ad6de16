"""The one exception type a user sees: a one-line message, exit code 2 from the CLI."""


class HarnessError(Exception):
    """Bad input or environment the user can fix; its message is a single line."""

    exit_code = 2
