"""The contract every output follows: deliver event documents somewhere outside.

An output (syslog, a file, a TCP stream, a webhook, email) receives batches of event
documents (the JSON documents of :func:`flowhawk.sinks.format.event_documents`, as
dicts) and delivers all of a batch or raises. It never retries, queues or routes:
:mod:`flowhawk.outputs.delivery` does that around it (a persistent outbox per output,
retries with backoff, a bounded backlog), so an output that is down never blocks the
pipeline or the other outputs.

Outputs are configured as ``[[outputs]]`` tables; ``type`` picks the class in
:data:`flowhawk.outputs.OUTPUTS` and the rest is validated by its ``Settings`` model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from flowhawk.settingtypes import Duration

#: An event document as outputs receive it (JSON-ready values only).
Document = dict[str, Any]


class DeliveryError(Exception):
    """A batch could not be delivered (the receiver is down, refused, or timed out)."""


class OutputSettings(BaseModel):
    """Settings every output has; each output type extends them."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique name (metrics, routes)."
    )
    type: str = Field(description="Output type: syslog, file, tcp, webhook, email.")
    max_backlog: int = Field(
        default=100_000,
        ge=1,
        description="Events held for delivery at most; beyond it the oldest are dropped (counted).",
    )
    batch: int = Field(default=100, ge=1, description="Events sent per delivery at most.")
    retry_min: Duration = Field(default=1.0, description="First wait after a failed delivery.")
    retry_max: Duration = Field(default=300.0, description="Longest wait between retries.")
    timeout: Duration = Field(default=10.0, description="Connect/send timeout of one delivery.")


class Output(ABC):
    """One configured destination. Synchronous; called from its delivery thread only."""

    type: ClassVar[str]
    description: ClassVar[str]
    Settings: ClassVar[type[OutputSettings]] = OutputSettings

    def __init__(self, settings: OutputSettings, data_dir: Path):
        self.settings = settings
        self.data_dir = data_dir

    @property
    def name(self) -> str:
        return self.settings.name

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or open; may raise :class:`DeliveryError`/``OSError`` (retried later)."""

    @abstractmethod
    def send(self, docs: list[Document]) -> None:
        """Deliver every document of the batch, or raise :class:`DeliveryError`/``OSError``.

        A failure after part of a batch went out is allowed (delivery is at least once:
        the whole batch is sent again; receivers deduplicate on the event ``id``)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release; never raises."""
