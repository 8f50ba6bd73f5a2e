"""The unchanging prefix of an agent's requests: what providers' prompt caches can reuse.

Every round of one unit's agent sends the same tools, system prompt and first user message (the
task and the exemplars; `agent/context.py` keeps them first and identical), then a conversation
that only grows until older rounds are summarised.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from coin_scale.llm import jsontext
from coin_scale.llm.messages import ChatRequest


def prefix_key(request: ChatRequest) -> str:
    """A short digest of the tools, the system prompt and the first message: equal for every
    round of one unit, different between units."""
    # The canonical form of the request cut to its first message, not of the whole conversation.
    prefix = replace(request, messages=request.messages[:1]).canonical()
    del prefix["max_tokens"], prefix["temperature"]
    text = jsontext.dumps(prefix, sort_keys=True)
    return "coin-scale-" + hashlib.sha256(text.encode()).hexdigest()[:24]
