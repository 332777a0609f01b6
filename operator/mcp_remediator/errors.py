"""Exceptions that steps raise to say how they ended.

The engine maps them onto step and remediation phases: ``StepFailed`` fails the step
(retried first when ``transient``), ``Refused`` ends the whole run in phase ``Refused``
with nothing written. Imported by actions, clients and the engine.
"""

from __future__ import annotations


class StepFailed(Exception):
    """A step failed; ``message`` names the cause in one line."""

    def __init__(self, message: str, *, reason: str = "StepFailed", transient: bool = False):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.transient = transient


class TransientFailure(StepFailed):
    """A failure worth retrying: a timeout, a conflict, a server or connection error."""

    def __init__(self, message: str, *, reason: str = "StepFailed"):
        super().__init__(message, reason=reason, transient=True)


class VerificationFailed(StepFailed):
    """A verification did not hold in time."""

    def __init__(self, message: str):
        super().__init__(message, reason="VerificationFailed")


class Refused(Exception):
    """The operator will not do this; nothing was written."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class TemplateError(StepFailed):
    """A template could not be rendered (unknown root, missing label, bad name)."""

    def __init__(self, message: str):
        super().__init__(message, reason="TemplateError")
