"""Shared error classification for the adapters: HTTP status and body -> `ProviderError` kind,
Retry-After parsing, and scrubbing of the API key out of any text an error carries.

Pure functions over plain values (status, headers, message), so every SDK maps onto one table.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from coin_scale.llm.messages import ErrorKind, ProviderError

MAX_MESSAGE_CHARS = 500
"""Error messages are cut to this length: a provider's body can be long, and logs keep them."""

_SPEND_PATTERNS = re.compile(
    r"insufficient[_ ]quota|billing[_ ]hard[_ ]limit|credit balance|credits are depleted"
    r"|prepayment credits|spend(?:ing)? (?:limit|cap)|budget (?:limit|exceeded|exhausted)"
    r"|api usage limits|billing (?:is )?not enabled|enable billing|billing account"
    r"|limit:\s*0(?![\d.])",
    re.IGNORECASE,
)
"""Phrases of quota or budget exhaustion, which waiting does not fix."""

_BENIGN_BILLING = re.compile(r"check your plan and billing details", re.IGNORECASE)
"""Gemini says this on every per-minute 429 (and OpenAI on `insufficient_quota`, which has its
own code): alone it does not mean the budget is gone."""

_KEY_INVALID = re.compile(r"API_KEY_INVALID|API key not valid|invalid[_ ]api[_ ]key", re.IGNORECASE)
"""Gemini answers a bad key with 400 INVALID_ARGUMENT and reason API_KEY_INVALID."""


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait from `retry-after-ms` (preferred) or `Retry-After` (seconds or HTTP date)."""
    if headers is None:
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if seconds >= 0 else None


def retry_delay_from_body(body: Any) -> float | None:
    """Gemini's `google.rpc.RetryInfo` detail (`"retryDelay": "37s"`), when the body has one."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return None
    for detail in details:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def is_spend_limit(text: str, code: str | None = None) -> bool:
    """Whether an error says a quota or budget is exhausted (not a per-minute limit)."""
    if code and code.lower() in {"insufficient_quota", "billing_hard_limit_reached"}:
        return True
    return bool(_SPEND_PATTERNS.search(_BENIGN_BILLING.sub("", text)))


def classify_status(status: int, text: str, *, code: str | None = None) -> ErrorKind:
    """The kind of an HTTP error status, looking at its body text for quota exhaustion."""
    if status in (400, 402, 403, 429) and is_spend_limit(text, code):
        return "spend_limit"
    if status == 429:
        return "rate_limit"
    if status in (401, 403) or (status == 400 and _KEY_INVALID.search(text)):
        return "auth"
    if status == 402:
        return "spend_limit"
    if status == 408:
        return "timeout"
    if status == 409 or status >= 500:
        return "server"
    return "bad_request"


def body_text(body: Any) -> str:
    """A short, single-line text of an error body (dict, list or str) for messages and matching."""
    if body is None:
        return ""
    if isinstance(body, str | bytes):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    else:
        try:
            text = json.dumps(body, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            text = repr(body)
    return " ".join(text.split())


def summary(body: Any) -> str:
    """The readable part of an error body: its message and type or status, else its text."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        tag = error.get("type") or error.get("status") or error.get("code")
        return f"{error['message']} [{tag}]" if tag else str(error["message"])
    return body_text(body)


MIN_SECRET_CHARS = 6
"""Shorter keys (placeholders for local servers) are not scrubbed: it would mangle the text."""


def scrub(text: str, secret: str | None) -> str:
    """`text` without `secret` (nor a long prefix of it), cut to `MAX_MESSAGE_CHARS`."""
    if secret and len(secret) >= MIN_SECRET_CHARS:
        text = text.replace(secret, "***")
        if len(secret) >= 12:
            text = text.replace(secret[:-4], "***")
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return text


def status_error(
    provider: str,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None,
    *,
    api_key: str | None,
    code: str | None = None,
) -> ProviderError:
    """The `ProviderError` for an HTTP error response."""
    kind = classify_status(status, body_text(body), code=code)
    retry_after = None
    if kind == "rate_limit":
        retry_after = parse_retry_after(headers)
        if retry_after is None:
            retry_after = retry_delay_from_body(body)
    return ProviderError(
        kind,
        scrub(summary(body) or f"HTTP {status}", api_key),
        provider=provider,
        status=status,
        retry_after=retry_after,
    )


def transport_error(provider: str, err: BaseException, *, api_key: str | None) -> ProviderError:
    """A `ProviderError` for an exception raised while sending or reading (no HTTP status):
    timeouts, refused or dropped connections, bodies that do not parse."""
    name = type(err).__name__
    detail = scrub(f"{name}: {err}" if str(err) else name, api_key)
    mro = [c.__name__.lower() for c in type(err).__mro__]
    if isinstance(err, TimeoutError) or any("timeout" in c for c in mro):
        return ProviderError("timeout", detail, provider=provider)
    if isinstance(err, ValueError):  # json.JSONDecodeError, pydantic.ValidationError
        return ProviderError("malformed", detail, provider=provider)
    if isinstance(err, TypeError):  # the SDK refused the call's arguments
        return ProviderError("bad_request", detail, provider=provider)
    return ProviderError("connection", detail, provider=provider)


def malformed(provider: str, what: str, *, api_key: str | None) -> ProviderError:
    """A 2xx reply whose content is not what the API promises."""
    return ProviderError("malformed", scrub(what, api_key), provider=provider, status=None)


def sdk_error(provider: str, sdk: ModuleType, err: BaseException, *, api_key: str) -> ProviderError:
    """The `ProviderError` for anything the `openai` or `anthropic` SDK raised (both share the
    same exception classes by name: timeout, connection, response validation, HTTP status)."""
    if isinstance(err, sdk.APITimeoutError):
        return ProviderError("timeout", "no reply in time", provider=provider)
    if isinstance(err, sdk.APIConnectionError):
        cause = err.__cause__ or err
        detail = scrub(f"{type(cause).__name__}: {cause}", api_key)
        return ProviderError("connection", detail, provider=provider)
    if isinstance(err, sdk.APIResponseValidationError):
        return malformed(provider, f"reply does not fit the schema: {err.message}", api_key=api_key)
    if isinstance(err, sdk.APIStatusError):
        return status_error(
            provider, err.status_code, err.body, err.response.headers, api_key=api_key,
            code=getattr(err, "code", None),
        )  # fmt: skip
    return transport_error(provider, err, api_key=api_key)
