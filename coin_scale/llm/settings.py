"""Provider settings from `configs/llm.yaml`: default models, prices, rate limits, key variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from coin_scale.errors import UserError
from coin_scale.llm.messages import Usage
from coin_scale.llm.ratelimit import RateLimits

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "llm.yaml"
"""The table shipped with coin-scale (the project is installed editable, so configs/ is here)."""


@dataclass(frozen=True, kw_only=True)
class Price:
    """US dollars per million tokens."""

    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None = None
    """Input read from the provider's prompt cache; None: the plain input price."""
    cache_write_per_million: float | None = None
    """Input written to the prompt cache (Anthropic: 1.25x input); None: the plain input price."""

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """Dollars for one call; `input_tokens` counts every input token, the cached and written
        ones among them."""
        plain = max(0, input_tokens - cached_input_tokens - cache_write_tokens)
        cached = (
            self.input_per_million
            if self.cached_input_per_million is None
            else (self.cached_input_per_million)
        )
        write = (
            self.input_per_million
            if self.cache_write_per_million is None
            else (self.cache_write_per_million)
        )
        return (
            plain * self.input_per_million
            + cached_input_tokens * cached
            + cache_write_tokens * write
            + output_tokens * self.output_per_million
        ) / 1e6

    def cost_of(self, usage: Usage) -> float:
        """`cost` of a reply's usage."""
        return self.cost(
            usage.input_tokens,
            usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )


@dataclass(frozen=True, kw_only=True)
class ProviderSettings:
    """What coin-scale knows about one provider."""

    name: str
    key_env: tuple[str, ...]
    """Environment variables that may hold the API key, in order of preference."""
    default_model: str
    rate_limits: RateLimits
    describe_model: str = ""
    """The cheaper vision model of the agents' `describe` and `summarize` tools (`--describe`);
    empty: `default_model`."""


T = TypeVar("T")

RequestOverrides = tuple[tuple[str, Any], ...]
"""(parameter, value) pairs set on a model's requests; a None value leaves the parameter out."""


@dataclass(frozen=True, kw_only=True)
class LLMSettings:
    providers: dict[str, ProviderSettings]
    prices: dict[str, Price]
    request_overrides: dict[str, RequestOverrides] = field(default_factory=dict)
    """Model (or model family) -> parameters of its requests, in the provider SDK's own names
    (OpenAI's reasoning models take no `temperature` but the default)."""

    def provider(self, name: str) -> ProviderSettings:
        try:
            return self.providers[name]
        except KeyError:
            raise UserError(
                f"unknown LLM provider {name!r}; expected one of {', '.join(self.providers)}"
            ) from None

    def price(self, model: str) -> Price | None:
        """The model's price; a dated or suffixed name (`gpt-4o-2024-08-06`) matches its base."""
        return _by_model(self.prices, model)

    def overrides(self, model: str) -> RequestOverrides:
        """The request overrides of `model` (or of its family, the longest matching name)."""
        return _by_model(self.request_overrides, model) or ()


def _by_model(table: dict[str, T], model: str) -> T | None:
    """`table[model]`, else the entry of the longest name that `model` extends with `-...`."""
    if model in table:
        return table[model]
    candidates = [m for m in table if model.startswith(m + "-")]
    return table[max(candidates, key=len)] if candidates else None


def _price(model: str, values: Any) -> Price:
    """[input, output] or [input, output, cached input] or [..., cache write]."""
    if not isinstance(values, list | tuple) or not 2 <= len(values) <= 4:
        raise ValueError(
            f"price of {model!r}: expected [input, output(, cached input(, cache write))]; "
            f"got {values!r}"
        )
    floats = [float(v) for v in values] + [None, None]
    return Price(
        input_per_million=floats[0],  # type: ignore[arg-type]
        output_per_million=floats[1],  # type: ignore[arg-type]
        cached_input_per_million=floats[2],
        cache_write_per_million=floats[3],
    )


def _overrides(model: str, values: Any) -> RequestOverrides:
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise ValueError(
            f"request_overrides of {model!r}: expected a mapping of parameter names to values; "
            f"got {values!r}"
        )
    return tuple(sorted(values.items()))


def load_settings(path: str | Path | None = None) -> LLMSettings:
    """Read the settings file (default: the one shipped); `UserError` if it is unusable."""
    path = DEFAULT_CONFIG if path is None else path
    try:
        raw: Any = yaml.safe_load(Path(path).read_text("utf-8"))
        providers = {
            name: ProviderSettings(
                name=name,
                key_env=tuple(p["key_env"]),
                default_model=str(p["default_model"]),
                rate_limits=RateLimits(**p["rate_limits"]),
                describe_model=str(p.get("describe_model") or p["default_model"]),
            )
            for name, p in raw["providers"].items()
        }
        prices = {
            str(model): _price(str(model), values)
            for model, values in raw["prices_per_million_tokens"].items()
        }
        overrides = {
            str(model): _overrides(str(model), values)
            for model, values in (raw.get("request_overrides") or {}).items()
        }
    except OSError as err:
        raise UserError(f"cannot read the LLM settings {path}: {err.strerror}") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(
            f"{path} is not a valid LLM settings file ({type(err).__name__}: {err}); "
            "see configs/llm.yaml for the format"
        ) from None
    return LLMSettings(providers=providers, prices=prices, request_overrides=overrides)
