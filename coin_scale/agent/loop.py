"""The agent loop: one LLM call per round, its tool calls run in order, until a valid `finish`.

`explain_unit` never raises: a provider error, a failing tool or an exhausted budget ends that
unit with status 'failed' and the error stored, so one unit cannot stop a sweep. Every step
(tool call, text reply, the reason it stopped) becomes one `experiments` row.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import jsonschema

from coin_scale.agent.budget import Budget, Reservation, SweepBudget
from coin_scale.agent.context import RoundRecord, build_request, fit_result
from coin_scale.agent.masks import CROP_SIDE
from coin_scale.agent.prompts import FINAL_ROUND_NOTICE, NUDGE, first_message, system_prompt
from coin_scale.agent.subject import UnitSubject
from coin_scale.agent.tools import (
    FINISH_PARAMETERS,
    FULL_RESOLUTION_TOOLS,
    ExperimentTools,
    FinishAnswer,
    ToolOutcome,
    answer_from_arguments,
)
from coin_scale.llm.messages import ChatRequest, ChatResponse, Message, ToolCall, ToolResult
from coin_scale.storage.schemas import experiments

log = logging.getLogger(__name__)

AgentStatus = Literal["ok", "failed", "parse_failure"]


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """How one unit is explained: rounds, context size, sampling, per-unit budget."""

    max_rounds: int = 12
    """LLM calls at most; the last one is told it must call finish."""
    keep_last_rounds: int = 3
    """Rounds sent verbatim; older ones are summarised as text, without images."""
    image_size: int = 128
    """Largest side, in pixels, of any image sent to the model."""
    max_output_tokens: int = 1024
    """`max_tokens` of each LLM call."""
    temperature: float = 0.0
    """Sampling temperature of each LLM call."""
    max_tokens: int | None = 200_000
    """Per-unit token budget (input + output over all rounds); None: no limit."""
    max_usd: float | None = 1.0
    """Per-unit dollar budget; None: no limit."""
    usd_per_million_tokens: float = 0.0
    """Price used to estimate a call's cost before it is made, when higher than the average
    seen so far (which is 0 before the first priced call): pass the model's output price so
    that dollar budgets hold from the first call."""
    exemplars_shown: int = 8
    """Exemplars in the first message (the `exemplars` tool can show the others)."""
    max_arguments_chars: int = 4000
    """Longest `arguments_json` stored per step."""

    def __post_init__(self) -> None:
        if self.max_rounds < 1 or self.keep_last_rounds < 1 or self.max_output_tokens < 1:
            raise ValueError(
                "AgentConfig needs max_rounds, keep_last_rounds and max_output_tokens >= 1; got "
                f"{self.max_rounds}, {self.keep_last_rounds}, {self.max_output_tokens}"
            )
        if self.image_size < 8:
            raise ValueError(f"image_size: expected at least 8 pixels; got {self.image_size}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature: expected a value in [0, 2]; got {self.temperature}")
        if self.usd_per_million_tokens < 0:
            raise ValueError(
                f"usd_per_million_tokens: expected >= 0; got {self.usd_per_million_tokens}"
            )
        if self.exemplars_shown < 0 or self.max_arguments_chars < 16:
            raise ValueError(
                "exemplars_shown must be >= 0 and max_arguments_chars >= 16; got "
                f"{self.exemplars_shown}, {self.max_arguments_chars}"
            )


@dataclass(frozen=True, kw_only=True)
class CallContext:
    """Which unit and round an LLM call is for (the gateway's ledger and logs)."""

    layer: str
    unit: int
    round: int


@dataclass(frozen=True, kw_only=True)
class ChatResult:
    """What the chat callable returns: the reply and what it cost."""

    response: ChatResponse
    cost_usd: float = 0.0
    """Dollars this call cost (0 when cached or unpriced)."""
    cached: bool = False
    """Served from the request cache: nothing was billed."""


Chat = Callable[[ChatRequest, CallContext], Awaitable[ChatResult]]
"""One LLM call (the gateway implements it; `coin_scale.testing.chat.policy_chat` for scripted
policies)."""


MAX_ASSISTANT_TEXT = 2000
"""Characters of a round's assistant text kept in `experiments.assistant_text`."""


@dataclass(frozen=True, kw_only=True)
class AgentOutcome:
    """The result of explaining one unit; failures are a status and an error, never a label."""

    status: AgentStatus
    """'ok' (a valid answer), 'failed' (error says why), 'parse_failure' (the last answer did
    not parse)."""
    label: str | None = None
    description: str | None = None
    confidence: float | None = None
    evidence: tuple[str, ...] = ()
    test_prompts: tuple[str, ...] = ()
    """The agent's prompts for testing its label on generated images (`finish`'s optional
    `test_prompts`); empty when it gave none."""
    error: str | None = None
    rounds: int = 0
    """LLM replies received."""
    invalid_calls: int = 0
    """Tool calls refused: unknown tool or arguments that failed validation."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    experiments: list[experiments.Row] = field(default_factory=list)
    """One row per step, in order."""
    images: list[StepImage] = field(default_factory=list)
    """The images each step showed the agent, in order (thumbnails, for the experiment log)."""


@dataclass(frozen=True, kw_only=True)
class StepImage:
    """One image a step showed the agent, with the unit's activation on it."""

    round: int
    step: int
    image_id: str
    """`ex-N` (an exemplar) or the id of an image a tool made."""
    activation: float | None
    data: bytes
    """The image as attached, encoded."""
    media_type: str = "image/png"


def _candidates(text: str) -> list[str]:
    """JSON object texts in `text`: fenced blocks first, then every balanced `{...}`."""
    out = []
    for i, chunk in enumerate(text.split("```")):
        if i % 2 == 1:
            out.append(chunk.removeprefix("json").removeprefix("JSON").strip())
    decoder = json.JSONDecoder()
    for start in (i for i, c in enumerate(text) if c == "{"):
        try:
            _, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        out.append(text[start:end])
    return out


_FINISH_VALIDATOR = jsonschema.Draft202012Validator(FINISH_PARAMETERS)


def parse_final_text(text: str) -> FinishAnswer | None:
    """A final answer given as text: a JSON object with label, description, confidence (and
    optionally evidence), possibly in a ```json fence; None when there is none."""
    for candidate in _candidates(text):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        data.setdefault("evidence", [])
        if _FINISH_VALIDATOR.is_valid(data):
            return answer_from_arguments(data)
    return None


def _arguments_text(call: ToolCall, limit: int) -> str:
    text = call.raw_arguments or (json.dumps(call.arguments) if call.arguments is not None else "")
    return text[:limit]


def _short_arguments(call: ToolCall) -> str:
    text = json.dumps(call.arguments, separators=(",", ":")) if call.arguments else "{}"
    if call.arguments is None:
        text = repr(call.raw_arguments[:60])
    return text if len(text) <= 160 else text[:157] + "..."


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:1000]


class _UnitRun:
    """The running totals and rows of one unit."""

    def __init__(
        self, subject: UnitSubject, *, run_id: str, explainer: str, llm_model: str
    ) -> None:
        self.subject = subject
        self.ids: dict[str, Any] = dict(
            run_id=run_id, model=subject.model, layer=subject.layer, unit=subject.unit,
            kind=subject.kind, explainer=explainer, llm_model=llm_model,
        )  # fmt: skip
        self.rows: list[experiments.Row] = []
        self.images: list[StepImage] = []
        self.round_text = ""
        """The assistant's text of the current round (its hypothesis, when it writes one)."""
        self.rounds = self.invalid = self.input_tokens = self.output_tokens = 0
        self.cost = 0.0
        self.current_round = 0
        self.round_cost: tuple[int, int, float] = (0, 0, 0.0)

    def row(
        self, round: int, step: int, tool: str | None, arguments: str | None, status: str,
        summary: str | None,
    ) -> None:  # fmt: skip
        inp, out, usd = self.round_cost
        self.rows.append(
            experiments.Row(
                **self.ids,
                round=round,
                step=step,
                tool=tool,
                arguments_json=arguments,
                status=status,
                result_summary=summary,
                assistant_text=(self.round_text or None) if step == 0 else None,
                input_tokens=inp,
                output_tokens=out,
                cost_usd=usd,
            )
        )

    def outcome(self, status: AgentStatus, **fields: Any) -> AgentOutcome:
        return AgentOutcome(
            status=status, rounds=self.rounds, invalid_calls=self.invalid,
            input_tokens=self.input_tokens, output_tokens=self.output_tokens, cost_usd=self.cost,
            experiments=self.rows, images=self.images, **fields,
        )  # fmt: skip

    def finished(self, answer: FinishAnswer) -> AgentOutcome:
        return self.outcome(
            "ok", label=answer.label, description=answer.description,
            confidence=answer.confidence, evidence=answer.evidence,
            test_prompts=answer.test_prompts,
        )  # fmt: skip

    def failed(
        self, error: str, *, status: AgentStatus = "failed", tool: str | None = None,
        arguments: str | None = None,
    ) -> AgentOutcome:  # fmt: skip
        """End the unit: a last row (the next step of the current round) says why."""
        step = sum(1 for row in self.rows if row.round == self.current_round)
        self.row(self.current_round, step, tool, arguments, status, error)
        log.info("unit %s: %s: %s", self.subject.id, status, error)
        return self.outcome(status, error=error)


async def explain_unit(
    subject: UnitSubject,
    tools: ExperimentTools,
    chat: Chat,
    *,
    config: AgentConfig | None = None,
    sweep_budget: SweepBudget | None = None,
    run_id: str,
    explainer: str,
    llm_model: str,
) -> AgentOutcome:
    """Explain one unit with an LLM that calls `tools`; never raises (see the module docstring).

    `explainer` and `llm_model` name the provider and model in the rows; `sweep_budget`, shared
    by every unit of a sweep, stops this unit when the sweep's limits would be exceeded.
    """
    config = config or AgentConfig()
    run = _UnitRun(subject, run_id=run_id, explainer=explainer, llm_model=llm_model)
    try:
        return await _loop(subject, tools, chat, config, sweep_budget, run)
    except Exception as err:  # a bug of ours or of a tool backend: stored, never raised
        log.exception("unit %s failed", subject.id)
        return run.failed(_error_text(err))


async def _loop(
    subject: UnitSubject,
    tools: ExperimentTools,
    chat: Chat,
    config: AgentConfig,
    sweep: SweepBudget | None,
    run: _UnitRun,
) -> AgentOutcome:
    specs = tools.specs()
    system = system_prompt(subject, specs, max_rounds=config.max_rounds)
    first = first_message(subject, n=config.exemplars_shown, image_size=config.image_size)
    tools.exemplars_in_first_message(config.exemplars_shown)
    budget = Budget(config.max_tokens, config.max_usd)
    history: list[RoundRecord] = []
    for r in range(config.max_rounds):
        final = r == config.max_rounds - 1
        run.current_round = r
        request = build_request(
            system=system, first=first, rounds=history, tools=specs,
            keep_last_rounds=config.keep_last_rounds, max_tokens=config.max_output_tokens,
            temperature=config.temperature, notice=FINAL_ROUND_NOTICE if final else "",
        )  # fmt: skip
        run.round_cost = (0, 0, 0.0)
        context = CallContext(layer=subject.layer, unit=subject.unit, round=r)
        result = await _ask(chat, request, context, config, budget, sweep, run)
        if isinstance(result, str):
            return run.failed(result)
        response = result.response
        if response.tool_calls:
            record, done, finish_error = await _run_calls(r, response, tools, run, config)
            tokens, usd = tools.take_spend()  # describe / summarize: the unit's budget too
            budget.charge(tokens, usd)
            if sweep is not None:
                sweep.charge(tokens, usd)
            run.cost += usd
            if done is not None:
                done = replace(done, cost_usd=run.cost)
            if done is not None:
                return done
            if final and finish_error is not None:
                return run.failed(
                    f"the final finish call was invalid: {finish_error}", status="parse_failure"
                )
            if final:
                return run.failed(f"no finish within {config.max_rounds} rounds")
            history.append(record)
            continue
        answer = parse_final_text(response.text)
        if answer is not None:
            run.row(r, 0, None, None, "finished", f"final answer as text: {answer.label!r}")
            return run.finished(answer)
        snippet = response.text.strip()[:200]
        if final:
            return run.failed(
                f"the final answer did not parse as label/description/confidence: {snippet!r}",
                status="parse_failure",
            )
        run.row(r, 0, None, None, "no_tool", f"text without a tool call: {snippet!r}")
        history.append(
            RoundRecord(
                round=r,
                assistant=Message(role="assistant", text=response.text),
                reply=Message(role="user", text=NUDGE),
                summary=(f"a text reply without a tool call: {snippet[:100]!r}",),
            )
        )
    raise AssertionError("unreachable: the final round always returns")


async def _ask(
    chat: Chat,
    request: ChatRequest,
    context: CallContext,
    config: AgentConfig,
    budget: Budget,
    sweep: SweepBudget | None,
    run: _UnitRun,
) -> ChatResult | str:
    """One LLM call within the budgets, charged to both; the error in words when there is none.

    The call is estimated at the request's tokens plus `max_output_tokens`, priced at the average
    cost per token seen so far (the unit's, else the sweep's) or `usd_per_million_tokens`,
    whichever is higher."""
    estimate = request.estimate_input_tokens() + config.max_output_tokens
    seen = budget.usd_per_token or (sweep.usd_per_token if sweep is not None else 0.0)
    rate = max(seen, config.usd_per_million_tokens / 1e6)
    reason = budget.would_exceed(estimate, estimate * rate)
    reservation: Reservation | None = None
    if reason is None and sweep is not None:
        held = sweep.reserve(estimate, estimate * rate)
        reservation, reason = (held, None) if isinstance(held, Reservation) else (None, held)
    if reason is not None:
        return f"budget: {reason}"
    try:
        result = await chat(request, context)
    except BaseException as err:  # cancelled too: the reservation must not leak
        if reservation is not None and sweep is not None:
            sweep.settle(reservation, 0, 0.0)
        if isinstance(err, Exception):
            return _error_text(err)
        raise
    usage = result.response.usage
    cost = 0.0 if result.cached else float(result.cost_usd)
    billed = 0 if result.cached else usage.total
    budget.charge(billed, cost)
    if reservation is not None and sweep is not None:
        sweep.settle(reservation, billed, cost)
    run.rounds += 1
    run.input_tokens += usage.input_tokens
    run.output_tokens += usage.output_tokens
    run.cost += cost
    run.round_cost = (usage.input_tokens, usage.output_tokens, cost)
    run.round_text = (result.response.text or "").strip()[:MAX_ASSISTANT_TEXT]
    return result


async def _run_calls(
    r: int, response: ChatResponse, tools: ExperimentTools, run: _UnitRun, config: AgentConfig
) -> tuple[RoundRecord, AgentOutcome | None, str | None]:
    """Run a reply's tool calls in order. Returns the round's record, the outcome when a valid
    finish (or a crashing tool) ends the unit, and why the last invalid finish was refused."""
    results: list[ToolResult] = []
    lines: list[str] = []
    finish_error = None
    for step, call in enumerate(response.tool_calls):
        arguments = _arguments_text(call, config.max_arguments_chars)
        try:
            outcome: ToolOutcome = await asyncio.to_thread(tools.call, call)
        except Exception as err:
            log.exception("unit %s: tool %s crashed", run.subject.id, call.name)
            failed = run.failed(_error_text(err), tool=call.name, arguments=arguments)
            return _record(r, response, results, lines), failed, None
        run.row(r, step, call.name, arguments, outcome.status, outcome.summary)
        run.images.extend(
            StepImage(
                round=r, step=step, image_id=shown.image_id, activation=shown.activation,
                data=shown.part.data, media_type=shown.part.media_type,
            )  # fmt: skip
            for shown in outcome.shown
        )
        if outcome.status == "invalid":
            run.invalid += 1
        if outcome.answer is not None:
            return _record(r, response, results, lines), run.finished(outcome.answer), None
        if call.name == "finish":
            finish_error = outcome.summary
        size = CROP_SIDE if call.name in FULL_RESOLUTION_TOOLS else config.image_size
        results.append(fit_result(outcome.result, size))
        lines.append(f"{call.name}({_short_arguments(call)}) -> {outcome.summary}")
    return _record(r, response, results, lines), None, finish_error


def _record(
    r: int, response: ChatResponse, results: list[ToolResult], lines: list[str]
) -> RoundRecord:
    return RoundRecord(
        round=r,
        assistant=Message(role="assistant", text=response.text, tool_calls=response.tool_calls),
        reply=Message(role="user", tool_results=tuple(results)),
        summary=tuple(lines),
    )
