"""The webhook output: each batch of events as one signed HTTP POST (httpx).

The request body is ``{"events": [document, ...]}`` (compact UTF-8 JSON) with headers:

- ``Content-Type: application/json``
- ``X-Flowhawk-Event-Ids``: the batch's event ids, comma separated;
- ``X-Flowhawk-Timestamp``: when the request was signed, in unix seconds;
- ``X-Flowhawk-Signature: sha256=<hex>`` when a ``secret`` is set: the HMAC-SHA256,
  keyed with the secret (UTF-8), of ``<timestamp>.`` followed by the raw body bytes;
- the configured extra ``headers`` (e.g. an ``Authorization`` token); they cannot
  replace the headers above.

Any 2xx answer confirms the batch. Anything else, a timeout or a connection error
raises :class:`~flowhawk.outputs.base.DeliveryError` and the batch is sent again later
(with a new timestamp and signature). A 4xx answer other than 408 and 429 usually means
the request itself is refused (wrong URL, secret or token): it is retried all the same,
and the error says so. Redirects are not followed.

How a receiver verifies a request:

1. read the raw body bytes before parsing them;
2. reject the request when ``X-Flowhawk-Timestamp`` is more than a few minutes (say
   300 s) away from its own clock: a recorded request cannot be replayed later;
3. compute ``hmac_sha256(secret, timestamp + "." + body)`` as lowercase hex, prefix it
   with ``sha256=`` and compare it with ``X-Flowhawk-Signature`` in constant time
   (Python: ``hmac.compare_digest``); reject on mismatch;
4. deduplicate on each event's ``id``: delivery is at least once, so a batch whose
   answer was lost arrives again (and, within the window, so could a replayed one).

Python, for example::

    def verify(secret: bytes, headers, body: bytes, window: float = 300) -> bool:
        ts = headers["X-Flowhawk-Timestamp"]
        if abs(time.time() - int(ts)) > window:
            return False
        mac = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest("sha256=" + mac, headers["X-Flowhawk-Signature"])
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import ssl
import time
from pathlib import Path
from typing import Literal

import httpx
from pydantic import Field, field_validator, model_validator

from flowhawk import __version__
from flowhawk.outputs.base import DeliveryError, Document, Output, OutputSettings
from flowhawk.outputs.stream import client_tls_context

#: Headers the output sets itself; ``headers`` may not name them.
RESERVED_HEADERS = (
    "content-type",
    "content-length",
    "host",
    "x-flowhawk-event-ids",
    "x-flowhawk-timestamp",
    "x-flowhawk-signature",
)
_TOKEN = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Flowhawk-Signature`` value of a request: ``sha256=<hex HMAC>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookOutput(Output):
    """Batches of events POSTed as JSON to a URL, signed with HMAC-SHA256."""

    type = "webhook"
    description = "HTTP POST of each batch as JSON to a URL, optionally HMAC-SHA256 signed."

    class Settings(OutputSettings):
        type: Literal["webhook"] = Field(default="webhook", description="Output type: webhook.")
        url: str = Field(description="http(s) URL the batches are POSTed to.")
        secret: str | None = Field(
            default=None,
            min_length=1,
            description="Key of the X-Flowhawk-Signature HMAC-SHA256; none: unsigned.",
        )
        headers: dict[str, str] = Field(
            default={}, description="Extra request headers, e.g. Authorization."
        )
        ca_file: Path | None = Field(
            default=None, description="https: PEM CA certificates to verify the server with."
        )
        verify: bool = Field(
            default=True, description="https: verify the server's certificate and name."
        )

        @field_validator("url")
        @classmethod
        def _url(cls, v: str) -> str:
            try:
                url = httpx.URL(v)
            except httpx.InvalidURL as exc:
                raise ValueError(f"{v!r} is not a URL: {exc}") from None
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"{v!r} is not an http:// or https:// URL with a host")
            return v

        @field_validator("headers")
        @classmethod
        def _headers(cls, v: dict[str, str]) -> dict[str, str]:
            for name, value in v.items():
                if not name or set(name) - _TOKEN:
                    raise ValueError(f"{name!r} is not a valid header name")
                if name.lower() in RESERVED_HEADERS:
                    raise ValueError(f"header {name!r} is set by the output itself")
                if "\r" in value or "\n" in value or not value.isascii():
                    raise ValueError(f"header {name!r}: the value must be one line of ASCII")
            return v

        @model_validator(mode="after")
        def _https_only(self) -> WebhookOutput.Settings:
            if self.ca_file is not None and not self.url.lower().startswith("https:"):
                raise ValueError("ca_file is only used with an https:// url")
            return self

    def __init__(self, settings: OutputSettings, data_dir: Path):
        if not isinstance(settings, WebhookOutput.Settings):
            settings = WebhookOutput.Settings.model_validate(settings.model_dump())
        super().__init__(settings, data_dir)
        self.cfg: WebhookOutput.Settings = settings
        self.label = f"webhook output {settings.name!r} ({settings.url})"
        self._verify: ssl.SSLContext | bool = (
            client_tls_context(settings.ca_file, settings.verify, self.label)
            if settings.url.lower().startswith("https:")
            else False  # plain http (redirects are not followed): no CA bundle to load
        )
        self._client: httpx.Client | None = None

    def open(self) -> None:
        """Create the HTTP client (connections are pooled and kept alive)."""
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.cfg.timeout,
                verify=self._verify,
                follow_redirects=False,
                headers={"User-Agent": f"flowhawk/{__version__}"},
            )

    def request(self, docs: list[Document]) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the request delivering ``docs``, signed now."""
        body = json.dumps({"events": docs}, separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = str(int(time.time()))
        headers = dict(self.cfg.headers)
        headers["Content-Type"] = "application/json"
        headers["X-Flowhawk-Event-Ids"] = ",".join(str(d.get("id", "")) for d in docs)
        headers["X-Flowhawk-Timestamp"] = timestamp
        if self.cfg.secret:
            headers["X-Flowhawk-Signature"] = sign(self.cfg.secret, timestamp, body)
        return body, headers

    def send(self, docs: list[Document]) -> None:
        """POST the batch; anything but a 2xx answer raises :class:`DeliveryError`."""
        if not docs:
            return
        body, headers = self.request(docs)
        self.open()
        assert self._client is not None
        try:
            response = self._client.post(self.cfg.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                f"{self.label}: no answer within timeout = {self.cfg.timeout:g}s ({exc})"
            ) from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{self.label}: request failed: {exc}") from exc
        code = response.status_code
        if 200 <= code < 300:
            return
        text = " ".join(response.text.split())[:200]
        hint = ""
        if 400 <= code < 500 and code not in (408, 429):
            hint = " (the receiver refuses the request: check url, secret and headers; retried)"
        raise DeliveryError(f"{self.label}: HTTP {code} {response.reason_phrase}{hint}: {text}")

    def close(self) -> None:
        """Close the client and its connections; never raises."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing must not fail delivery
                client.close()
