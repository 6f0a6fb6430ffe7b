"""One error hierarchy: every error names the component and the input it concerns."""

from __future__ import annotations


class FlowhawkError(Exception):
    """Base of all flowhawk errors; the CLI prints these without a traceback."""

    exit_code = 1


class ConfigError(FlowhawkError):
    """The configuration is invalid (unknown key, bad value, unreadable file)."""

    exit_code = 2


class InputError(FlowhawkError):
    """An input cannot be read at all (missing, unknown format, unreadable)."""

    def __init__(self, input_name: str, message: str):
        super().__init__(f"{input_name}: {message}")
        self.input_name = input_name
        self.message = message


class MissingToolError(FlowhawkError):
    """An external program flowhawk relies on for one input type is not installed."""

    def __init__(self, tool: str, needed_for: str, install_hint: str):
        super().__init__(
            f"the '{tool}' program is needed to read {needed_for} but was not found on PATH; "
            f"install it with: {install_hint}"
        )
        self.tool = tool


class RegistryError(FlowhawkError):
    """A component name is unknown or registered twice."""

    exit_code = 2


class StateError(FlowhawkError):
    """The data directory's saved state cannot be used."""


class AuthError(FlowhawkError):
    """A user or token request cannot be done (unknown or existing user, bad role, weak
    password, revoked or unknown token)."""
