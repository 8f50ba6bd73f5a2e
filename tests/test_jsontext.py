"""JSON with pieces encoded once: the text is exactly that of encoding the whole value."""

from __future__ import annotations

import json
import pickle

from coin_scale.llm import jsontext
from coin_scale.llm.cache import canonical_json
from coin_scale.llm.messages import ChatRequest, ImagePart, Message, ToolSpec

SCHEMA = {
    "type": "object",
    "properties": {"z": {"type": "string", "description": "zèbre \u0000 «quoted»"}, "a": {}},
    "required": ["z"],
}


def test_spliced_pieces_give_the_text_of_the_whole_value() -> None:
    value = {
        "text": "a NUL \x00 and a fake placeholder \x000123456789abcdef\x00, ü, \"quotes\"",
        "tools": [SCHEMA, SCHEMA],
        "n": [1, 2.5, None, True],
    }
    spliced = {
        **value,
        "tools": [jsontext.RawJSON(jsontext.encode(SCHEMA, sort_keys=s)) for s in (True, True)],
    }
    for sort_keys in (False, True):
        expected = json.dumps(
            value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False
        )
        if sort_keys:
            assert jsontext.dumps(spliced, sort_keys=True) == expected
        assert jsontext.dumps(value, sort_keys=sort_keys) == expected
    assert json.loads(jsontext.dumps(spliced)) == value


def test_a_tool_specs_schema_is_encoded_once_and_travels_with_it() -> None:
    spec = ToolSpec(name="t", description="d", parameters=SCHEMA)
    text = spec.parameters_json
    assert json.loads(text) == SCHEMA
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec and copy.__dict__["parameters_json"] is not None
    assert copy.parameters_json == text


def test_the_cache_keys_input_is_unchanged_by_the_spliced_schemas() -> None:
    image = ImagePart(data=b"\x89PNG fake")
    request = ChatRequest(
        system="sys ü",
        messages=(Message(role="user", text="hi", images=(image,)),),
        tools=(ToolSpec(name="t", description="d", parameters=SCHEMA),),
    )
    plain = request.canonical()
    plain["tools"] = [{"name": "t", "description": "d", "parameters": SCHEMA}]
    legacy = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(request.canonical()) == legacy
    assert request.estimate_input_tokens() == request.estimate_input_tokens(legacy)
