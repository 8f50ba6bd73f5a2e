"""API keys: found in the environment before any work starts, and kept out of every output.

A key is held only in memory (the gateway actor's client). `KeyRedactor` is a logging filter that
replaces every known key in log records, a last line of defence should an SDK message quote one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from coin_scale.errors import UserError
from coin_scale.llm.settings import ProviderSettings

REDACTED = "[REDACTED]"


class MissingKey(UserError):
    """No API key for the chosen provider."""


def find_key(settings: ProviderSettings, environ: Mapping[str, str] | None = None) -> str:
    """The provider's key from its environment variables; `MissingKey` naming them otherwise."""
    env = os.environ if environ is None else environ
    for name in settings.key_env:
        value = env.get(name, "").strip()
        if value:
            return value
    names = " or ".join(settings.key_env)
    raise MissingKey(
        f"--explainer {settings.name} needs an API key in {names}, and none is set. Fix: export "
        f"{settings.key_env[0]}=..., or run without keys with --explainer offline"
    )


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret (of 8+ characters) replaced by `[REDACTED]`."""
    for secret in secrets:
        if len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    return text


class KeyRedactor(logging.Filter):
    """Rewrites log records that would print a key; attach to handlers with `install`."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True

    def install(self) -> None:
        """On every handler of the root logger (where coin-scale's logs go)."""
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
