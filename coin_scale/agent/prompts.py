"""The agent's prompts: the system prompt (task, tools, method) and the first user message (the
unit and its exemplars). Pure functions of their inputs, covered by exact-output tests."""

from __future__ import annotations

from collections.abc import Sequence

from coin_scale.agent.context import downscale_bytes
from coin_scale.agent.subject import UnitSubject
from coin_scale.agent.tools import EXEMPLAR_PREFIX, MAX_LABEL_CHARS
from coin_scale.llm.messages import Message, ToolSpec

SYSTEM = """\
You explain what one {what} of a vision model responds to, by running experiments; the first \
message names it and shows its exemplars.

Its activation on an image is one number; higher means a stronger response. Its exemplars are \
the images of a probe set on which it responded most.

Tools (what each takes is in its definition): {tools}.

Method:
1. Look at the exemplars and what they have in common (attributes, when given, are ground truth).
2. Form hypotheses about what drives the unit.
3. Test them: render scenes that have the suspected feature and scenes that lack it, and edit one \
image at a time changing a single attribute, so that a change in activation has one cause.
4. Compare activations; drop hypotheses the numbers contradict.
5. Call finish with a label of at most {max_label} characters (e.g. "red star", "striped \
texture"), a one or two sentence description, a confidence in [0, 1] and evidence (image ids \
with their activations).

Rules: you have at most {max_rounds} replies; independent tool calls can share one reply. \
Renders are simple synthetic scenes (shapes, colours, textures, backgrounds, lighting), so they \
cannot show everything a photograph can. Report what the measurements show, including when the \
unit responds to something you could not name; a low confidence is better than a wrong label."""

FIRST = """\
Explain {what} {unit} of layer {layer} of {model}.

Its top {n} exemplars are attached in this order:
{lines}

Start experimenting; call finish when the evidence supports a label."""

FINAL_ROUND_NOTICE = (
    "This is your last reply: call the finish tool now with your best label, description, "
    "confidence and evidence."
)
"""Appended to the last user turn before the final round."""

NUDGE = (
    "Your reply called no tool. Continue with a tool call, or call the finish tool with label, "
    "description, confidence and evidence to end."
)
"""Sent after a text reply that is not a parsable final answer."""

_WHAT = {"neuron": "unit", "sae": "sparse-autoencoder feature", "synthetic": "unit"}



def system_prompt(subject: UnitSubject, tools: Sequence[ToolSpec], *, max_rounds: int) -> str:
    """The system prompt for one unit. It names no unit, and the tools only by name (their
    descriptions go once, in the tool definitions): the same for every unit of a sweep, so the
    providers' prompt caches share tools and system prompt across units."""
    return SYSTEM.format(
        what=_WHAT[subject.kind],
        tools=", ".join(s.name for s in tools),
        max_label=MAX_LABEL_CHARS,
        max_rounds=max_rounds,
    )


def _exemplar_line(rank: int, subject: UnitSubject) -> str:
    ex = subject.exemplars[rank]
    line = f"{EXEMPLAR_PREFIX}-{rank}: activation {ex.activation:.4g}"
    if ex.attributes:
        line += "; attributes " + ", ".join(f"{k}={v}" for k, v in ex.attributes.items())
    if ex.label:
        line += f"; label {ex.label}"
    return line


def first_message(subject: UnitSubject, *, n: int, image_size: int) -> Message:
    """The first user turn: the unit and its top `n` exemplars, images downscaled."""
    n = min(n, len(subject.exemplars))
    if n == 0:
        text = (
            f"Explain {_WHAT[subject.kind]} {subject.unit} of layer {subject.layer} of "
            f"{subject.model}. It has no exemplars: start from renders.\n\n"
            "Call finish when the evidence supports a label."
        )
        return Message(role="user", text=text)
    text = FIRST.format(
        what=_WHAT[subject.kind],
        unit=subject.unit,
        layer=subject.layer,
        model=subject.model,
        n=n,
        lines="\n".join(_exemplar_line(i, subject) for i in range(n)),
    )
    images = tuple(downscale_bytes(ex.png, image_size) for ex in subject.exemplars[:n])
    return Message(role="user", text=text, images=images)
