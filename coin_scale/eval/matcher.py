"""Free text -> rendered-attribute concepts: how an LLM explainer's label is compared with a
formula, and turned into one that can be scored.

The matcher (documented in README "Label accuracy on synthetic units"):
1. Lower-case the text; hyphens, slashes and underscores become spaces.
2. Find every phrase of `PHRASES` (a concept's value, plurals, adjectives and common synonyms:
   'striped' -> texture=stripes, 'circular' -> shape=circle, 'upper left' -> position=top-left,
   'dimly lit' -> light=dim), longest phrase first, phrases never overlapping.
3. A negator ('not', 'no', 'without', 'non', 'except', 'excluding', 'never', 'nor') negates the
   next concept, and the concepts joined to it by 'or' ('not red or blue'); 'non-white rings'
   negates white only.
4. `text_formula` reads the matched concepts as a formula: concepts joined by 'or' are OR-ed
   ('cross or red', 'stars or circles'), as are other values of one attribute (an object is one
   shape); the groups are AND-ed ('red star' = red AND star); negated concepts are AND NOT-ed.
   Brackets and 'and'/'or' precedence beyond that are not parsed: the stored formula shows how a
   text was read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from coin_scale.concepts.formula import And, AndNot, Formula, Leaf, Or, to_text
from unity_pool import vocab

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "shape=circle": ("circle", "circles", "circular", "round", "disc", "discs", "disk", "disks"),
    "shape=square": ("square", "squares"),
    "shape=triangle": ("triangle", "triangles", "triangular"),
    "shape=star": ("star", "stars", "star shaped"),
    "shape=hexagon": ("hexagon", "hexagons", "hexagonal"),
    "shape=cross": ("cross", "crosses", "plus sign", "plus signs"),
    "shape=heart": ("heart", "hearts", "heart shaped"),
    "shape=ring": ("ring", "rings", "annulus", "donut", "donuts", "doughnut", "doughnuts"),
    "shape=crescent": ("crescent", "crescents", "moon", "moons"),
    "shape=arrow": ("arrow", "arrows"),
    "color=red": ("red", "crimson", "scarlet"),
    "color=orange": ("orange",),
    "color=yellow": ("yellow",),
    "color=green": ("green",),
    "color=cyan": ("cyan", "teal", "turquoise"),
    "color=blue": ("blue",),
    "color=purple": ("purple", "violet", "magenta"),
    "color=pink": ("pink",),
    "color=brown": ("brown",),
    "color=white": ("white",),
    "color=black": ("black",),
    "texture=solid": ("solid", "solid texture", "solid colored", "uniformly colored", "plain fill"),
    "texture=stripes": ("stripe", "stripes", "striped", "stripy", "striped texture"),
    "texture=dots": ("dot", "dots", "dotted", "polka dot", "polka dots", "spotted", "spots"),
    "texture=checker": ("checker", "checkers", "checkered", "chequered", "checkerboard", "checked"),
    "texture=fur": ("fur", "furry", "hairy", "fuzzy", "furry texture"),
    "background=plain": ("plain background", "plain backdrop", "uniform background"),
    "background=gradient": ("gradient", "gradient background"),
    "background=noise": ("noise background", "noisy background", "noise", "noisy"),
    "background=grid": ("grid", "grid background", "gridded"),
    "background=sky": ("sky", "sky background", "clouds", "cloudy"),
    "size=small": ("small", "tiny", "small size"),
    "size=medium": ("medium", "medium size", "medium sized"),
    "size=large": ("large", "big", "large size"),
    "position=top-left": ("top left", "upper left", "position top left"),
    "position=top": ("top", "upper", "position top", "top center", "top centre"),
    "position=top-right": ("top right", "upper right", "position top right"),
    "position=left": ("left", "position left", "left side"),
    "position=center": ("center", "centre", "centered", "centred", "middle", "position center"),
    "position=right": ("right", "position right", "right side"),
    "position=bottom-left": ("bottom left", "lower left", "position bottom left"),
    "position=bottom": ("bottom", "lower", "position bottom", "bottom center", "bottom centre"),
    "position=bottom-right": ("bottom right", "lower right", "position bottom right"),
    "light=dim": ("dim", "dim light", "dimly lit", "dark", "darker", "low light", "dim lighting"),
    "light=normal": ("normal light", "normal lighting"),
    "light=bright": ("bright", "bright light", "brightly lit", "strong light", "bright lighting"),
    "n_objects=1": ("one object", "single object", "1 object", "a single object"),
    "n_objects=2": ("two objects", "2 objects", "pair of objects"),
    "n_objects=3": ("three objects", "3 objects"),
}

CONCEPTS: tuple[str, ...] = tuple(
    f"{attribute}={value}" for attribute, values in vocab.ATTRIBUTES.items() for value in values
)
"""Every rendered-attribute concept the matcher knows."""

PHRASES: dict[str, str] = {
    phrase: concept for concept, words in _SYNONYMS.items() for phrase in words
}
"""phrase -> concept."""

NEGATORS = ("not", "no", "without", "non", "except", "excluding", "never", "nor")

_PHRASE_RE = re.compile(
    r"\b(" + "|".join(re.escape(p) for p in sorted(PHRASES, key=len, reverse=True)) + r")\b"
)
_OR_RE = re.compile(r"[\s,]*\bor\b(\s+(a|an|the))?\s*")
_NEGATOR_RE = re.compile(r"\b(" + "|".join(NEGATORS) + r")\b")


@dataclass(frozen=True)
class TextMatch:
    """The concepts a text names, in order of first mention."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]
    or_joined: tuple[bool, ...] = ()
    """Per affirmed concept: whether 'or' joins it to the affirmed concept before it."""

    @property
    def concepts(self) -> frozenset[str]:
        """Every concept named, negated or not (what concept precision/recall compare)."""
        return frozenset(self.positive) | frozenset(self.negative)


def match_concepts(text: str, names: Sequence[str] | None = None) -> TextMatch:
    """The concepts named in `text`, split into affirmed and negated; only `names` when given."""
    allowed = set(names) if names is not None else None
    cleaned = re.sub(r"[-/_]", " ", text.lower())
    positive: list[str] = []
    negative: list[str] = []
    or_joined: list[bool] = []
    last_end = 0
    negating = False
    for found in _PHRASE_RE.finditer(cleaned):
        concept = PHRASES[found.group(1)]
        if allowed is not None and concept not in allowed:
            continue
        between = cleaned[last_end : found.start()]
        last_end = found.end()
        if _NEGATOR_RE.search(between):
            negating = True
        elif not (negating and _OR_RE.fullmatch(between.replace(",", " "))):
            negating = False
        if concept in positive or concept in negative:
            continue
        if negating:
            negative.append(concept)
        else:
            or_joined.append(bool(positive) and _OR_RE.fullmatch(between) is not None)
            positive.append(concept)
    return TextMatch(positive=tuple(positive), negative=tuple(negative), or_joined=tuple(or_joined))


def text_formula(match: TextMatch, names: Sequence[str]) -> Formula | None:
    """The formula of a match over concept `names` (see the module docstring); None when it names
    no affirmed concept."""
    groups: list[list[str]] = []
    joined = match.or_joined or (False,) * len(match.positive)
    for concept, after_or in zip(match.positive, joined, strict=True):
        if concept not in names:
            continue
        attribute = concept.partition("=")[0]
        same = next(
            (g for g in groups if len(g) >= 1 and all(c.partition("=")[0] == attribute for c in g)),
            None,
        )
        if after_or and groups:
            groups[-1].append(concept)
        elif same is not None:
            same.append(concept)
        else:
            groups.append([concept])
    if not groups:
        return None
    formula: Formula | None = None
    for concepts in groups:
        group: Formula = Leaf(names.index(concepts[0]))
        for concept in concepts[1:]:
            group = Or(group, Leaf(names.index(concept)))
        formula = group if formula is None else And(formula, group)
    assert formula is not None
    for concept in match.negative:
        if concept in names:
            formula = AndNot(formula, Leaf(names.index(concept)))
    return formula


def text_formula_text(text: str, names: Sequence[str]) -> str | None:
    """Free text -> machine formula text over `names` (None if it names no affirmed concept)."""
    formula = text_formula(match_concepts(text, names), names)
    return None if formula is None else to_text(formula, names)
