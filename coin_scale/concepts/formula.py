"""Compositional explanations as tiny immutable formulas over concepts.

A formula is a `Leaf` (one concept, by its row in a `ConceptMatrix`) or a binary node (`And`,
`Or`, `AndNot`) whose semantics live in the `OPERATORS` registry. Three renderings:

- `to_text`: machine form, fully parenthesised: `((shape=star AND color=red) OR shape=heart)`;
- `to_words`: for people: `red star or heart`, `star, not red`;
- `canonical_text`: `to_text` with the operands of commutative operators sorted, so two formulas
  that differ only in operand order compare equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, TypeVar

import torch

T = TypeVar("T", torch.Tensor, float, int)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One concept."""

    index: int
    """Row of the concept in the `ConceptMatrix` the formula is evaluated on."""


@dataclass(frozen=True, slots=True)
class _Binary:
    operator: ClassVar[str]
    left: Formula
    """Left operand (in beam search: the formula being extended)."""
    right: Formula
    """Right operand (in beam search: the added concept)."""


@dataclass(frozen=True, slots=True)
class And(_Binary):
    """Images showing both operands."""

    operator: ClassVar[str] = "and"


@dataclass(frozen=True, slots=True)
class Or(_Binary):
    """Images showing either operand."""

    operator: ClassVar[str] = "or"


@dataclass(frozen=True, slots=True)
class AndNot(_Binary):
    """Images showing the left operand and not the right one."""

    operator: ClassVar[str] = "and_not"


Formula = Leaf | And | Or | AndNot


def _and_measure(a: T, b: T, ab: T) -> T:
    return ab


def _or_measure(a: T, b: T, ab: T) -> T:
    return a + b - ab


def _and_not_measure(a: T, b: T, ab: T) -> T:
    return a - ab


@dataclass(frozen=True, kw_only=True)
class Operator:
    """How one binary operator combines two concept sets."""

    name: str
    """Registry key, as used in `OfflineExplainerConfig.operators`."""
    keyword: str
    """Infix word of `to_text`."""
    node: Callable[[Formula, Formula], Formula]
    """Builds the formula node from (left, right)."""
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """Boolean masks of the operands -> boolean mask of the result (same shape)."""
    measure: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    """Any additive measure (count, weighted count) of the result from the measures of left,
    right and left-and-right: what lets beam search score candidates with matrix products."""


OPERATORS: Mapping[str, Operator] = MappingProxyType(
    {
        "and": Operator(
            name="and", keyword="AND", node=And, combine=torch.logical_and, measure=_and_measure
        ),
        "or": Operator(
            name="or", keyword="OR", node=Or, combine=torch.logical_or, measure=_or_measure
        ),
        "and_not": Operator(
            name="and_not",
            keyword="AND NOT",
            node=AndNot,
            combine=lambda a, b: a & ~b,
            measure=_and_not_measure,
        ),
    }
)
"""Binary operators by name."""


def get_operator(name: str) -> Operator:
    """The registered operator `name`; ValueError listing the valid names otherwise."""
    try:
        return OPERATORS[name]
    except KeyError:
        raise ValueError(
            f"operator: expected one of {', '.join(OPERATORS)}; got {name!r}. Fix: use one of them."
        ) from None


def evaluate(formula: Formula, matrix: torch.Tensor) -> torch.Tensor:
    """bool (image,): the images a formula covers, given the bool (concept, image) matrix."""
    if isinstance(formula, Leaf):
        return matrix[formula.index]
    op = OPERATORS[formula.operator]
    return op.combine(evaluate(formula.left, matrix), evaluate(formula.right, matrix))


def n_leaves(formula: Formula) -> int:
    """Number of concept occurrences (the `max_length` of beam search)."""
    if isinstance(formula, Leaf):
        return 1
    return n_leaves(formula.left) + n_leaves(formula.right)


def to_text(formula: Formula, names: Sequence[str]) -> str:
    """Machine form: concept names, `AND`/`OR`/`AND NOT`, every binary node parenthesised."""
    if isinstance(formula, Leaf):
        return names[formula.index]
    keyword = OPERATORS[formula.operator].keyword
    return f"({to_text(formula.left, names)} {keyword} {to_text(formula.right, names)})"


def parse_text(text: str, names: Sequence[str]) -> Formula:
    """The formula of a `to_text` string over `names` (inverse of `to_text`)."""
    keywords = sorted(((op.keyword, op) for op in OPERATORS.values()), key=lambda k: -len(k[0]))
    by_length = sorted(names, key=len, reverse=True)

    def fail(pos: int, expected: str) -> ValueError:
        return ValueError(
            f"formula text: expected {expected} at character {pos} of {text!r}; got "
            f"{text[pos : pos + 20]!r}. Fix: pass a string written by to_text with these names."
        )

    def parse(pos: int) -> tuple[Formula, int]:
        if text.startswith("(", pos):
            left, pos = parse(pos + 1)
            for keyword, op in keywords:
                if text.startswith(f" {keyword} ", pos):
                    right, end = parse(pos + len(keyword) + 2)
                    if not text.startswith(")", end):
                        raise fail(end, "')'")
                    return op.node(left, right), end + 1
            raise fail(pos, "an operator (" + ", ".join(k for k, _ in keywords) + ")")
        for name in by_length:
            end = pos + len(name)
            if text.startswith(name, pos) and (end == len(text) or text[end] in " )"):
                return Leaf(names.index(name)), end
        raise fail(pos, "a concept name")

    formula, end = parse(0)
    if end != len(text):
        raise fail(end, "the end of the text")
    return formula


def _conjuncts(formula: Formula) -> tuple[list[Formula], list[Formula]]:
    """(positive, negated) terms of a chain of And/AndNot, in formula order."""
    if isinstance(formula, And):
        lp, ln = _conjuncts(formula.left)
        rp, rn = _conjuncts(formula.right)
        return lp + rp, ln + rn
    if isinstance(formula, AndNot):
        lp, ln = _conjuncts(formula.left)
        return lp, ln + [formula.right]
    return [formula], []


def _disjuncts(formula: Formula) -> list[Formula]:
    if isinstance(formula, Or):
        return _disjuncts(formula.left) + _disjuncts(formula.right)
    return [formula]


def canonical_text(formula: Formula, names: Sequence[str]) -> str:
    """`to_text` up to the order of commutative operands (And/AndNot chains, Or chains)."""
    if isinstance(formula, Leaf):
        return names[formula.index]
    if isinstance(formula, Or):
        return (
            "(" + " OR ".join(sorted(canonical_text(f, names) for f in _disjuncts(formula))) + ")"
        )
    positive, negated = _conjuncts(formula)
    terms = sorted(canonical_text(f, names) for f in positive)
    terms += sorted("NOT " + canonical_text(f, names) for f in negated)
    return "(" + " AND ".join(terms) + ")"


# --- Words -------------------------------------------------------------------------------------

NOUN_ATTRIBUTES = ("shape", "label")
"""Attributes whose values are nouns that adjectives attach to (`red star`)."""

ADJECTIVE_ORDER = ("size", "color", "texture")
"""Attributes whose values read as adjectives, in English adjective order (`large red striped`)."""

TEXTURE_ADJECTIVES: Mapping[str, str] = MappingProxyType(
    {
        "solid": "solid",
        "stripes": "striped",
        "dots": "dotted",
        "checker": "checkered",
        "fur": "furry",
    }
)
"""Adjective of each texture value."""

GENERIC_NOUN = "object"
"""Noun that two or more adjectives attach to when the conjunction has no noun."""


def _split(name: str) -> tuple[str, str]:
    attribute, sep, value = name.partition("=")
    return (attribute, value) if sep else ("", name)


def _adjective(attribute: str, value: str) -> str:
    return TEXTURE_ADJECTIVES.get(value, value) if attribute == "texture" else value


def _count_words(value: str) -> str:
    return f"{value} object" if value == "1" else f"{value} objects"


_LEAF_WORDS: Mapping[str, Callable[[str], str]] = MappingProxyType(
    {
        "shape": lambda v: v,
        "label": lambda v: v,
        "color": lambda v: v,
        "texture": lambda v: f"{_adjective('texture', v)} texture",
        "size": lambda v: f"{v} size",
        "light": lambda v: f"{v} light",
        "background": lambda v: f"{v} background",
        "position": lambda v: f"position {v}",
        "n_objects": _count_words,
    }
)
"""Words for one concept on its own, by attribute; other attributes read `<attribute> <value>`."""


def concept_words(name: str) -> str:
    """`color=red` -> `red`; `texture=stripes` -> `striped texture`; `n_objects=2` -> `2 objects`."""
    attribute, value = _split(name)
    if not attribute:
        return value
    words = _LEAF_WORDS.get(attribute)
    return words(value) if words else f"{attribute.replace('_', ' ')} {value}"


def _conjunction_words(formula: Formula, names: Sequence[str]) -> str:
    positive, negated = _conjuncts(formula)
    noun: str | None = None
    adjectives: dict[str, list[str]] = {a: [] for a in ADJECTIVE_ORDER}
    others: list[Formula] = []
    for term in positive:
        attribute, value = _split(names[term.index]) if isinstance(term, Leaf) else ("", "")
        if noun is None and attribute in NOUN_ATTRIBUTES:
            noun = value
        elif attribute in adjectives:
            adjectives[attribute].append(_adjective(attribute, value))
        else:
            others.append(term)
    adjective_words = [w for a in ADJECTIVE_ORDER for w in adjectives[a]]
    parts: list[str] = []
    if noun is not None or len(adjective_words) > 1:
        parts.append(" ".join([*adjective_words, noun or GENERIC_NOUN]))
    elif adjective_words:
        # a lone adjective reads as its concept on its own ("striped texture")
        lone = next(t for t in positive if isinstance(t, Leaf) and t not in others)
        parts.append(concept_words(names[lone.index]))
    parts += [_operand_words(t, names) for t in others]
    text = " and ".join(parts)
    return text + "".join(f", not {_operand_words(t, names)}" for t in negated)


def _is_compound(formula: Formula, names: Sequence[str]) -> bool:
    """Whether the words of `formula` need parentheses inside a larger formula."""
    if isinstance(formula, Leaf):
        return False
    if isinstance(formula, Or | AndNot):
        return True
    words = _conjunction_words(formula, names)
    return " and " in words or ", not " in words


def _operand_words(formula: Formula, names: Sequence[str]) -> str:
    words = to_words(formula, names)
    return f"({words})" if _is_compound(formula, names) else words


def to_words(formula: Formula, names: Sequence[str]) -> str:
    """Plain English: `red star or heart`, `star, not red`, `large striped star and dim light`.

    Adjectives (size, colour, texture) attach to a shape or label noun (or to `object` when two or
    more have no noun); other concepts join with `and`; negations follow as `, not X`; compound
    operands are parenthesised.
    """
    if isinstance(formula, Leaf):
        return concept_words(names[formula.index])
    if isinstance(formula, Or):
        return " or ".join(_operand_words(f, names) for f in _disjuncts(formula))
    return _conjunction_words(formula, names)
