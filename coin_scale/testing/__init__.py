"""Test doubles: stand-ins for the LLM providers, for tests and benchmarks.

    policy.py          the contract a stand-in answers by: a `Policy` looks at a provider-neutral
                       `ConversationView` and returns the next `Action` (`CallTool` or `Reply`)
    agent_policies.py  scripted policies that play the agent's side (`ExperimenterPolicy`, and
                       others that misbehave in one specific way each)
    chat.py            `policy_chat`: a policy as the agent loop's `chat` callable, in process
    fakeserver/        real HTTP servers on 127.0.0.1 speaking the OpenAI, Anthropic and Gemini
                       wire formats, answering with a policy, injecting faults
                       (`python -m coin_scale.testing.fakeserver`)

This package may import `coin_scale.agent` and `coin_scale.llm`, never the reverse: no
production package imports it but `bench`, which runs against the fake servers on purpose.
Nothing is imported here: `chat.py` imports the agent loop (and with it torch), which the fake
servers do not need.
"""
