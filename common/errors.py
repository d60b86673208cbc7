"""One root, a few branches: the branch decides what happens next and the CLI exit code.

Messages say what was being done, to which dataset/version/file, and what to do next.
They never carry a plaintext ID number, phone number or name.
"""

from __future__ import annotations

from typing import Literal

ExitCode = Literal[0, 1, 2, 3, 4, 5, 75]
EX_TEMPFAIL = 75  # sysexits.h: a temporary failure, retrying later can succeed


class GovshareError(Exception):
    """Root of every error govshare raises on purpose."""

    exit_code: ExitCode = 1
    retriable: bool = False

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [])

    def lines(self) -> list[str]:
        """The error as the plain lines a CLI user sees."""
        return [self.message, *(f"  - {p}" for p in self.problems)]


class ConfigError(GovshareError):
    """Bad usage or configuration (catalog, arguments, environment). Fatal, exit 2."""

    exit_code = 2


class IntegrityError(GovshareError):
    """A signature, digest or manifest chain does not match. Fatal, exit 3."""

    exit_code = 3


class AccessDenied(GovshareError):
    """No grant, field outside the grant, missing or bad purpose, revoked subscriber. Exit 4."""

    exit_code = 4


class GateBlocked(GovshareError):
    """The validation gate refused to publish. Fatal for the run, exit 5."""

    exit_code = 5


class InternalError(GovshareError):
    """A bug: govshare found itself in a state its own code should never produce. Exit 1."""

    exit_code = 1

    def lines(self) -> list[str]:
        return [f"a bug: {self.message}", *(f"  - {p}" for p in self.problems)]


class TemporaryFailure(GovshareError):
    """Something needed is unreachable or busy for now; retrying later can succeed. Exit 75, and
    Airflow retries the task with backoff."""

    exit_code = EX_TEMPFAIL
    retriable = True


class SourceUnavailable(TemporaryFailure):
    """A source database could not be reached or timed out."""


class TargetUnavailable(TemporaryFailure):
    """A subscriber's target database (where a pull applies its rows) could not be reached."""


class PublishConflict(TemporaryFailure):
    """Another publisher made the same version visible first."""
