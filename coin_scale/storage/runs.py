"""The run recorder: the `runs` rows of one command run, `running` first, then `complete` or `failed`.

    recorder = RunRecorder(warehouse=wh, run_id=new_run_id(), command="dissect", model=...,
                           weights=..., layers=[layer], probe=probe_root, config=config.to_dict())
    with recorder:                      # writes the 'running' row
        ...                             # the run's work
        recorder.n_images = n           # what the 'complete' row will say
    # normal exit: a 'complete' row; an exception (Ctrl-C included): a 'failed' row, re-raised

Every row is keyed by run_id, so each replaces the one before (one row per run). A failed row's
`message` is the error on one line, at most 500 characters; Ctrl-C reads 'interrupted'. The message
and `config_json` are cleaned of the recorder's `secrets`, the values of secret-named environment
variables (`OPENAI_API_KEY` and the other LLM keys, `AWS_SECRET_ACCESS_KEY`, `*_TOKEN`, ...), a
URI's `user:password@` and secret-looking URI options (`secret_key=...`).

The storage foundation cannot import `coin_scale.llm` (llm imports storage), so the key redaction
here is its own: the same rule as `coin_scale.llm.keys.redact` (8+ characters -> [REDACTED]).
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import coin_scale
from coin_scale.errors import UserError
from coin_scale.storage.schemas.runs import Row
from coin_scale.storage.warehouse import Warehouse

log = logging.getLogger(__name__)

RunStatus = Literal["running", "complete", "failed"]

MESSAGE_CHARS = 500
"""A failed row's message is cut to this many characters."""

REDACTED = "[REDACTED]"
"""What a secret is replaced by (as `coin_scale.llm.keys.redact` does)."""

_SECRET_ENV = re.compile(
    r"(?i)(?:^|_)(?:API_KEY|ACCESS_KEY|ACCESS_KEY_ID|SECRET_KEY|SECRET|SESSION_TOKEN|TOKEN|PASSWORD)$"
)
_URI_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@?#\s\"']*@")
_SECRET_OPTION = re.compile(
    r"(?i)\b((?:access_key|secret_key|session_token|token|password|api_key)=)[^&#\s\"']*"
)


def new_run_id() -> str:
    """A fresh run id: `YYYYmmdd-HHMMSS-` (UTC) and 6 random hex digits, e.g. 20240501-120000-a1b2c3."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def secrets_in_environment() -> list[str]:
    """Values (8+ characters) of the environment variables named like secrets: `*_API_KEY` (the LLM
    providers' keys), `AWS_SECRET_ACCESS_KEY`, `*_TOKEN`, `*_PASSWORD`, ..."""
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v.strip()) >= 8]


def clean_text(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` without the given secrets and those of the environment (`secrets_in_environment`),
    a URI's `user:password@` and the value of secret-looking URI options (`secret_key=...`)."""
    for secret in sorted({s.strip() for s in [*secrets, *secrets_in_environment()]}, key=len,
                         reverse=True):  # fmt: skip
        if len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    text = _URI_USERINFO.sub(r"\1", text)
    return _SECRET_OPTION.sub(rf"\1{REDACTED}", text)


def error_message(error: BaseException | str, secrets: Sequence[str] = ()) -> str:
    """What a failed row says: 'interrupted' for Ctrl-C; a UserError's text; otherwise the
    error's type and text; on one line, cleaned (`clean_text`), at most 500 characters."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, str):
        text = error
    else:
        text = " ".join(str(error).split())
        if not isinstance(error, UserError):
            text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return clean_text(" ".join(text.split()), secrets)[:MESSAGE_CHARS]


@dataclass(kw_only=True, eq=False)
class RunRecorder:
    """The `runs` rows of one run: `start` writes 'running', `complete` or `fail` the end row.

    As a context manager it starts on entry and, on exit, completes (normal exit) or fails with
    the exception, which propagates. Set `n_images`, `n_failed` and `message` during the run; the
    end row carries them. A recorder that has ended ignores a later end (the first one stands)."""

    warehouse: Warehouse
    run_id: str
    """Write key of every row; `new_run_id()` when the caller has none."""
    command: str
    """The subcommand, e.g. 'dissect', 'eval mis', 'sweep'."""
    model: str
    weights: str
    layers: Sequence[str] = ()
    probe: str
    config: Mapping[str, Any] = field(default_factory=dict)
    """The run's settings, stored as `config_json` (sorted keys; non-JSON values as str)."""
    secrets: Sequence[str] = field(default=(), repr=False)
    """Strings that must never be stored (e.g. an API key held in memory)."""
    started_at: datetime | None = None
    """When the run started; None: when `start` is called."""
    n_images: int | None = None
    n_failed: int | None = None
    message: str | None = None
    status: RunStatus | None = field(default=None, init=False)
    """None before `start`, then the status of the last row written."""

    def start(self) -> RunRecorder:
        """Write the 'running' row (finished_at null); returns self."""
        if self.status is not None:
            raise RuntimeError(f"run {self.run_id} was already started")
        if self.started_at is None:
            self.started_at = datetime.now(UTC)
        self._write("running", finished_at=None)
        return self

    def complete(
        self,
        *,
        n_images: int | None = None,
        n_failed: int | None = None,
        message: str | None = None,
    ) -> None:
        """Write the 'complete' row; the arguments given (not None) replace the fields first."""
        if self.status is None:
            raise RuntimeError(f"run {self.run_id} completed before it was started")
        if self.status != "running":
            return
        if n_images is not None:
            self.n_images = n_images
        if n_failed is not None:
            self.n_failed = n_failed
        if message is not None:
            self.message = message
        self._write("complete", finished_at=datetime.now(UTC))

    def fail(self, error: BaseException | str) -> bool:
        """Write the 'failed' row with `error` as its message (`error_message`); whether a row was
        written. Never raises: a run never started, or already ended, is left as it is, and a
        failure to write is logged, so the caller's own error is the one that surfaces."""
        if self.status != "running":
            return False
        self.message = error_message(error, self.secrets)
        try:
            self._write("failed", finished_at=datetime.now(UTC))
        except Exception as err:  # the run's own error matters more
            log.warning("could not record run %s as failed: %s", self.run_id, error_message(err))
            return False
        return True

    def __enter__(self) -> RunRecorder:
        return self.start() if self.status is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None:
            self.complete()
        else:
            self.fail(exc)
        return False

    def _write(self, status: RunStatus, *, finished_at: datetime | None) -> None:
        assert self.started_at is not None
        row = Row(
            run_id=self.run_id, command=self.command, status=status, model=self.model,
            weights=self.weights, layers=tuple(self.layers), probe=self.probe,
            config_json=clean_text(json.dumps(dict(self.config), sort_keys=True, default=str),
                                   self.secrets),
            coin_scale_version=coin_scale.__version__, started_at=self.started_at,
            finished_at=finished_at, n_images=self.n_images, n_failed=self.n_failed,
            message=None if self.message is None else clean_text(self.message, self.secrets),
        )  # fmt: skip
        self.warehouse.write("runs", [row], key=self.run_id)
        self.status = status
