"""Errors graphfix raises. Every refusal says what (file, function, node, attribute) and why.

The CLI maps each kind to an exit code (see `EXIT_CODES`), prints the message, and writes
nothing.
"""

from __future__ import annotations


class GraphfixError(Exception):
    """Base class. `where` names the place (file, function, node) the error is about."""

    exit_code = 1

    def __init__(self, message: str, where: str | None = None):
        self.reason = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def at(self, where: str) -> "GraphfixError":
        """The same error with an outer location prepended (e.g. the file around a node)."""
        inner = f"{where}: {self.where}" if self.where else where
        return type(self)(self.reason, inner)


class InputError(GraphfixError):
    """The input cannot be read: missing, not a model, corrupt, or the output path is unusable."""

    exit_code = 2


class LayoutError(GraphfixError):
    """A params buffer whose size fits no cuDNN layout, or weights of the wrong shapes."""

    exit_code = 3


class UnsupportedError(GraphfixError):
    """A cuDNN op the converter understands but cannot convert faithfully (say why)."""

    exit_code = 4


class OutputError(GraphfixError):
    """The output cannot be written (exists without --force, not writable, disk full)."""

    exit_code = 5


class VerificationError(GraphfixError):
    """--verify: a converted op differs from the cuDNN reference, or the converted model does not run.

    `report` is the conversion's Report, whose `verification` holds every op's errors.
    """

    exit_code = 6

    def __init__(self, message: str, where: str | None = None, report=None):
        super().__init__(message, where)
        self.report = report
