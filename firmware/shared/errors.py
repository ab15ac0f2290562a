"""The one exception hierarchy of coalmine, grouped by who is at fault.

Library code (device runtime, wire protocol, console, signer, build scripts) raises these;
only CLI entry points turn them into a message, a hint and an exit code.  Keeping a single root
lets every entry point catch ``CoalmineError`` and nothing else, so genuine bugs still surface
as tracebacks instead of being swallowed as "bad input".
"""

from __future__ import annotations


class CoalmineError(Exception):
    """Root of every error coalmine raises on purpose.

    ``hint`` tells the user what to do next; entry points print it under the message.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# --- the outside world sent us something bad (attacker, network, corrupt file) -------------------


class InputError(CoalmineError):
    """Data from outside is malformed, forged, replayed or too large."""

    exit_code = 65  # EX_DATAERR


class DecodeError(InputError):
    """A wire format could not be decoded; ``offset`` is where the reader stopped."""

    def __init__(self, message: str, *, offset: int = 0, hint: str = "") -> None:
        super().__init__(f"{message} (at offset {offset})", hint=hint)
        self.offset = offset


class AuthenticationError(InputError):
    """A MAC or signature did not verify, or the sender is unknown."""


class RefusedError(InputError):
    """A signed document (trust root, release manifest, canary statement) that the trust rules
    refuse; the message is the reason, the one error type for every such refusal."""


class ReplayError(InputError):
    """A message was seen before or is older than the replay window allows."""


# --- the operator's configuration or command line is wrong ----------------------------------------


class ConfigError(CoalmineError):
    """Configuration is invalid; ``problems`` lists every problem found, not just the first."""

    exit_code = 78  # EX_CONFIG

    def __init__(self, message: str, *, problems: list[str] | None = None, hint: str = "") -> None:
        self.problems = list(problems or [])
        text = message if not self.problems else message + ":\n  - " + "\n  - ".join(self.problems)
        super().__init__(text, hint=hint)


class UsageError(ConfigError):
    """A command was asked to do something it cannot (unknown board, missing argument)."""

    exit_code = 64  # EX_USAGE


# --- the machine we run on is missing something ---------------------------------------------------


class EnvironmentFault(CoalmineError):
    """A tool, file, device or resource the job needs is missing or failing."""

    exit_code = 69  # EX_UNAVAILABLE


class StorageError(EnvironmentFault):
    """Persistent storage failed (disk full, read-only, corrupt database)."""

    exit_code = 74  # EX_IOERR


class ToolError(EnvironmentFault):
    """An external command is missing or exited non-zero."""


class TransportError(EnvironmentFault):
    """The DNS path to the console failed this time (timeout, SERVFAIL, no answer); retry later."""
