"""The stream meter read two ways: raw server-sent events (the gateway, ``run``) and chunks a
client library has parsed already (the LiteLLM plugin). Both must charge the same."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shadowprice.usage import StreamMeter

deltas = st.fixed_dictionaries(
    {},
    optional={
        "content": st.text(max_size=5),
        "reasoning_content": st.text(max_size=5),
        "tool_calls": st.just([{"index": 0}]),
    },
)
choices = st.fixed_dictionaries(
    {"delta": deltas, "finish_reason": st.sampled_from([None, "stop", "length"])}
)
usages = st.fixed_dictionaries(
    {"completion_tokens": st.one_of(st.integers(-5, 5000), st.text(max_size=3))},
    optional={"prompt_tokens": st.integers(0, 100)},
)
chunks = st.one_of(
    st.fixed_dictionaries({"choices": st.lists(choices, max_size=2)}),
    st.fixed_dictionaries({"choices": st.just([]), "usage": usages}),
    st.just({"error": {"message": "upstream failed"}}),
    st.just([1, 2]),  # not an object
)


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(chunks, max_size=12),
    done=st.booleans(),
    allowance=st.integers(1, 4096),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_parsed_chunks_are_charged_as_their_bytes(
    stream: list[object], done: bool, allowance: int, cuts: list[int]
) -> None:
    raw = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in stream)
    raw += b"data: [DONE]\n\n" if done else b""
    as_bytes = StreamMeter()
    at = 0
    for cut in sorted({min(c, len(raw)) for c in cuts}) + [len(raw)]:  # split anywhere
        as_bytes.feed(raw[at:cut])
        at = cut
    as_bytes.flush()
    parsed = StreamMeter()
    kept = [parsed.feed_chunk(c) for c in stream]
    if done:
        parsed.feed(b"data: [DONE]\n\n")
    assert parsed.count(allowance) == as_bytes.count(allowance)
    assert parsed.unreadable == as_bytes.unreadable
    for c, k in zip(stream, kept, strict=True):
        assert k == (isinstance(c, dict) and "error" not in c)
