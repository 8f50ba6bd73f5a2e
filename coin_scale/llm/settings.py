"""Provider settings from `configs/llm.yaml`: default models, prices, rate limits, key variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from coin_scale.errors import UserError
from coin_scale.llm.ratelimit import RateLimits

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "llm.yaml"
"""The table shipped with coin-scale (the project is installed editable, so configs/ is here)."""


@dataclass(frozen=True, kw_only=True)
class Price:
    """US dollars per million tokens."""

    input_per_million: float
    output_per_million: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1e6


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


@dataclass(frozen=True, kw_only=True)
class LLMSettings:
    providers: dict[str, ProviderSettings]
    prices: dict[str, Price]

    def provider(self, name: str) -> ProviderSettings:
        try:
            return self.providers[name]
        except KeyError:
            raise UserError(
                f"unknown LLM provider {name!r}; expected one of {', '.join(self.providers)}"
            ) from None

    def price(self, model: str) -> Price | None:
        """The model's price; a dated or suffixed name (`gpt-4o-2024-08-06`) matches its base."""
        if model in self.prices:
            return self.prices[model]
        candidates = [m for m in self.prices if model.startswith(m + "-")]
        return self.prices[max(candidates, key=len)] if candidates else None


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
            str(model): Price(input_per_million=float(i), output_per_million=float(o))
            for model, (i, o) in raw["prices_per_million_tokens"].items()
        }
    except OSError as err:
        raise UserError(f"cannot read the LLM settings {path}: {err.strerror}") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(
            f"{path} is not a valid LLM settings file ({type(err).__name__}: {err}); "
            "see configs/llm.yaml for the format"
        ) from None
    return LLMSettings(providers=providers, prices=prices)
