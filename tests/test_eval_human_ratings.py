"""Human ratings give InterpScore's H for the units they rate (issue 8); bad files name the line."""

from __future__ import annotations

import pytest

from coin_scale.eval.explanation_scores import NO_HUMANS, UnitScores
from coin_scale.eval.human_ratings import UnitRating, load_human_ratings, with_human_alignment
from coin_scale.eval.interpscore import InterpWeights, interp_score


def test_ratings_are_averaged_per_layer_and_unit(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("layer,unit,soft_correct,rater\nlayer4,3,1,a\nlayer4,3,0,b\nlayer4,3,1,c\n"
                    "layer3,3,0.25,a\n")  # fmt: skip
    ratings = load_human_ratings(path)
    assert ratings[("layer4", 3)] == UnitRating(H=pytest.approx(2 / 3), n=3)
    assert ratings[("layer3", 3)] == UnitRating(H=0.25, n=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layer,unit\nlayer4,3\n", "missing column(s) soft_correct"),
        ("layer,unit,soft_correct\n", "no ratings"),
        ("layer,unit,soft_correct\nlayer4,x,1\n", "line 2: unit must be an integer"),
        ("layer,unit,soft_correct\nlayer4,1,1\nlayer4,2,1.5\n", "line 3: expected a layer name"),
        ("layer,unit,soft_correct\n,2,1\n", "line 2: expected a layer name"),
    ],
)
def test_bad_ratings_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="r.csv") as err:
        load_human_ratings(path)
    assert message in str(err.value)


def test_a_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read the ratings CSV"):
        load_human_ratings(tmp_path / "none.csv")


def test_rated_units_get_h_and_the_aggregate_over_four_parts():
    weights = InterpWeights()
    interp = interp_score(S=0.8, C=0.2, R=0.5, H=None, weights=weights, notes=(NO_HUMANS,))
    scores = [UnitScores("layer4", 1, "color=red", None, interp),
              UnitScores("layer4", 2, "color=blue", None, interp)]  # fmt: skip
    out = with_human_alignment(scores, {("layer4", 1): UnitRating(H=0.9, n=4)})
    rated, unrated = out
    assert rated.interp is not None and rated.interp.H == 0.9
    assert rated.interp.parts == ("S", "C", "R", "H")
    assert rated.interp.score == pytest.approx(0.3 * 0.8 + 0.3 * 0.2 + 0.2 * 0.5 + 0.2 * 0.9)
    assert rated.interp.notes == ("H from 4 human ratings",)
    assert unrated is scores[1] and unrated.interp is not None
    assert unrated.interp.score == pytest.approx((0.24 + 0.06 + 0.1) / 0.8)
