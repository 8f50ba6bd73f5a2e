"""Concept vocabularies for photographs: the shipped lists and a user's own file."""

from __future__ import annotations

import pytest

from coin_scale.concepts.vocabulary import SHIPPED, load_vocabulary


@pytest.mark.parametrize(
    ("name", "size", "first"),
    [
        ("objects", 1000, "tench"),
        ("scenes", 365, "airfield"),
        ("textures", 47, "banded"),
        ("materials", 22, "brick"),
        ("colors", 20, "black"),
        ("parts", 60, "head"),
        ("nouns", 3000, "world"),
    ],
)
def test_every_shipped_vocabulary_loads_with_its_source_and_licence(name, size, first):
    vocabulary = load_vocabulary(name)
    assert len(vocabulary) == size and vocabulary.concepts[0] == first
    assert vocabulary.duplicates == 0
    assert vocabulary.source and vocabulary.licence and "user" not in vocabulary.source
    assert all(c == " ".join(c.split()) and not c.startswith("#") for c in vocabulary.concepts)


def test_objects_keep_imagenets_distinct_spellings():
    concepts = load_vocabulary("objects").concepts
    assert "Cardigan" in concepts and "cardigan" in concepts  # a corgi and a sweater


def test_no_shipped_vocabulary_holds_a_slur_or_a_vulgar_word():
    """What the nouns' build script excludes is not in any shipped list (a unit's label is read
    in reports)."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_nouns_vocabulary.py"
    excluded = runpy.run_path(str(script))["EXCLUDED"]
    assert {"shit", "whore"} <= excluded
    assert not excluded & {c.lower() for c in load_vocabulary("photo").concepts}


def test_photo_is_every_shipped_vocabulary_once():
    photo = load_vocabulary("photo")
    parts = [load_vocabulary(n) for n in SHIPPED]
    assert set(photo.concepts) == {c for v in parts for c in v.concepts}
    assert len(photo) == len(set(photo.concepts)) == sum(map(len, parts)) - photo.duplicates
    assert photo.concepts[0] == "tench" and "sky" in photo.concepts  # in scenes and materials
    assert load_vocabulary("textures,colors").concepts == (
        load_vocabulary("textures").concepts + load_vocabulary("colors").concepts
    )


def test_a_users_file_is_cleaned_and_fingerprinted(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my words\n  tabby   cat \n\ndog\ntabby cat\nDog\n")
    vocabulary = load_vocabulary(str(path))
    assert vocabulary.concepts == ("tabby cat", "dog", "Dog") and vocabulary.duplicates == 1
    assert vocabulary.source == "given by the user"
    same = tmp_path / "same.txt"
    same.write_text("tabby cat\ndog\nDog\n")
    assert load_vocabulary(str(same)).fingerprint == vocabulary.fingerprint


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is neither a file nor one of objects, scenes"),
        ("", "has no concepts"),
        ("# only a comment\n\n   \n", "has no concepts"),
        (b"\xff\xfe\x00bad", "cannot be read as text"),
    ],
)
def test_a_bad_vocabulary_says_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "words.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_vocabulary(str(path))
    with pytest.raises(ValueError, match="no vocabulary named"):
        load_vocabulary(" , ")
