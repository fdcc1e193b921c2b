"""Typed errors the CLI turns into one-line messages and exit codes.

Bad input (a file, a flag, a name) is :class:`InputError` (exit 2); a well-formed
request that no deployment can satisfy is :class:`InfeasibleError` (exit 3).
"""

from __future__ import annotations


class AutoplanError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputError(AutoplanError, ValueError):
    """The input is malformed, unknown or inconsistent (exit code 2)."""

    exit_code = 2


class Interrupted(AutoplanError):
    """Ctrl-C stopped the command (exit code 130); the message says what was kept."""

    exit_code = 130


class InfeasibleError(AutoplanError):
    """No deployment meets the constraints (exit code 3).

    ``reason`` names the binding constraint family (memory, devices, slo, bandwidth);
    ``achievable`` carries what is reachable with these devices, when known.
    """

    exit_code = 3

    def __init__(self, message: str, reason: str = "", achievable: dict | None = None):
        super().__init__(message)
        self.reason = reason
        self.achievable = achievable or {}


def first_error(e: Exception) -> str:
    """One line describing a pydantic ``ValidationError`` (its first error) or any error."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            # an unknown key first: with a misspelt key, that (not the required key it
            # leaves missing) is the error to name
            err = sorted(errors(), key=lambda x: x.get("type") != "extra_forbidden")[0]
        except Exception:  # noqa: BLE001 - fall through to the plain message
            err = None
        if err:
            loc = ".".join(str(x) for x in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            return f"{loc}: {msg}" if loc else msg
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__
