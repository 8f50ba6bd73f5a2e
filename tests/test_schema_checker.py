"""`SchemaChecker`: jsonschema-rs says whether an instance is valid, python `jsonschema` says
what is wrong; both verdicts agree on scenes and on agents' tool calls."""

from __future__ import annotations

import copy
import random

import jsonschema

from unity_pool.sampling import sample_scenes
from unity_pool.schema import SchemaChecker, load_schema
from unity_pool.tools import RenderTools

MUTATIONS = [
    lambda s: s.update(version=2),
    lambda s: s.update(fog=1),
    lambda s: s["objects"][0].update(size=9),
    lambda s: s["objects"][0].update(color="reddish"),
    lambda s: s["objects"][0].pop("shape"),
    lambda s: s.update(objects=[]),
    lambda s: s.update(width="wide"),
    lambda s: s.update(seed=-1),
    lambda s: s["objects"].append("not an object"),
]


def test_fast_and_python_verdicts_agree_on_scenes_and_render_calls() -> None:
    rng = random.Random(0)
    scene = SchemaChecker(load_schema())
    render = SchemaChecker(RenderTools().definitions()[0]["parameters"])
    python_scene = jsonschema.Draft202012Validator(load_schema())
    python_render = jsonschema.Draft202012Validator(render.schema)
    specs = [s.to_dict() for s in sample_scenes(40, seed=3, width=64, height=64)]
    bad = 0
    for spec in specs:
        mutated = copy.deepcopy(spec)
        if rng.random() < 0.5:
            rng.choice(MUTATIONS)(mutated)
        for instance in (spec, mutated):
            assert scene.is_valid(instance) == python_scene.is_valid(instance), instance
            bad += not scene.is_valid(instance)
        args = {"specs": [spec, mutated]}
        assert render.is_valid(args) == python_render.is_valid(args)
        assert (list(render.iter_errors(args)) == []) == render.is_valid(args)
    assert 0 < bad < 80


def test_values_jsonschema_rs_cannot_take_get_the_python_verdict() -> None:
    checker = SchemaChecker({"type": "object", "properties": {"a": {"type": "array"}}})
    assert checker.is_valid({"a": []})
    assert not checker.is_valid({"a": {1, 2}})  # a set: not JSON; python says not an array
    assert checker.is_valid({1: 2})  # a key jsonschema-rs refuses; an object to python
    assert [e.validator for e in checker.iter_errors({"a": 3})] == ["type"]
