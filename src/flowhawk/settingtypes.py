"""Types every settings model builds on: strict models and durations ("90s", "15m", "1h")."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '15m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(value))
        if not m:
            raise ValueError(
                f"{value!r} is not a duration (use seconds or e.g. '90s', '15m', '1h')"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class Strict(BaseModel):
    """A settings model: unknown keys are errors, defaults are validated too (the
    configuration's own sections derive the same from :class:`flowhawk.config.Strict`)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
