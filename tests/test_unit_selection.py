"""Choosing units by hand (`--select`): the parser and its checks, no model needed."""

from __future__ import annotations

import pytest

from coin_scale.records import UnitSelection, parse_selection, parse_unit_list


def test_unit_lists_keep_the_order_given_and_each_unit_once():
    assert parse_unit_list("12,3-5,4,0") == (12, 3, 4, 5, 0)
    for bad in ("", "a", "5-2", "-1", "3,,4", "1.5"):
        with pytest.raises(ValueError, match="not a unit index or a range"):
            parse_unit_list(bad)


def test_a_selection_names_layers_and_their_units():
    select = parse_selection(" layer4=12,45 ; layer3=7-9;layer4=12,50 ")
    assert select.names == ("layer4", "layer3")
    assert select.units_of("layer4") == (12, 45, 50) and select.units_of("layer3") == (7, 8, 9)
    assert select.units_of("layer2") is None
    assert str(select) == "layer4=12,45,50;layer3=7,8,9"
    assert parse_selection(str(select)) == select


def test_a_selection_from_a_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "units.txt"
    path.write_text("# the units MAIA looked at\nlayer4=12, 45\n\nlayer3=7  # a driver\n")
    assert parse_selection(f"@{path}") == UnitSelection((("layer4", (12, 45)), ("layer3", (7,))))
    with pytest.raises(ValueError, match="does not exist"):
        parse_selection(f"@{tmp_path / 'missing.txt'}")
    (tmp_path / "bad.txt").write_text("layer4=12\nlayer3\n")
    with pytest.raises(ValueError, match=r"bad.txt: 'layer3': expected LAYER=UNITS"):
        parse_selection(f"@{tmp_path / 'bad.txt'}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layer4", "expected LAYER=UNITS"),
        ("=3", "expected LAYER=UNITS"),
        ("layer4=", "expected LAYER=UNITS"),
        ("layer4=x", "'x' is not a unit index"),
        (";", "no units chosen"),
    ],
)
def test_a_selection_that_does_not_parse_says_why(text, message):
    with pytest.raises(ValueError, match=message):
        parse_selection(text)


def test_a_selection_is_checked_against_the_layers_and_their_sizes():
    select = parse_selection("layer4=3,511")
    select.check({"layer4": 512})
    with pytest.raises(ValueError, match=r"unit 511 of layer4 is out of range: it has 256 units \(0-255\)"):
        select.check({"layer4": 256})
    with pytest.raises(ValueError, match="'layer4' is not among the layers explained here: layer3"):
        select.check({"layer3": 512})
