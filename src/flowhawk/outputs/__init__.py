"""Outputs: where events go besides the event store (syslog, files, TCP, webhooks, email).

Each output type is one class (see :mod:`flowhawk.outputs.base`) registered here by
its ``type``; ``[[outputs]]`` tables in the config are validated against the class's
settings model by :func:`validate`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from flowhawk.errors import ConfigError
from flowhawk.outputs.base import Output, OutputSettings
from flowhawk.outputs.email import EmailOutput
from flowhawk.outputs.files import FileOutput
from flowhawk.outputs.syslog import SyslogOutput
from flowhawk.outputs.tcp import TcpOutput
from flowhawk.outputs.webhook import WebhookOutput
from flowhawk.registry import Registry

OUTPUTS: Registry[type[Output]] = Registry(
    "output",
    [(c.type, c) for c in (SyslogOutput, FileOutput, TcpOutput, WebhookOutput, EmailOutput)],
)


def validate(items: list[dict[str, Any]], origin: str) -> list[OutputSettings]:
    """``[[outputs]]`` tables to each type's settings; errors name the output and key."""
    out: list[OutputSettings] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        label = f"[[outputs]] #{i + 1}" + (f" ({item['name']})" if "name" in item else "")
        kind = item.get("type")
        if kind not in OUTPUTS:
            known = ", ".join(OUTPUTS.names())
            raise ConfigError(f"{origin}: {label}: unknown type {kind!r}; known: {known}")
        try:
            settings = OUTPUTS.get(kind).Settings.model_validate(item)
        except ValidationError as exc:
            from flowhawk.config import describe_error

            problems = "; ".join(describe_error(e) for e in exc.errors())
            raise ConfigError(f"{origin}: {label}: {problems}") from None
        if settings.name in names:
            raise ConfigError(f"{origin}: {label}: output name {settings.name!r} is used twice")
        names.add(settings.name)
        out.append(settings)
    return out
