"""Provider presets: an allowance as each API's request fields, never more than it in total."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowprice.limits import MAX_BUDGET
from shadowprice.providers import (
    DEFAULT_RESERVE,
    GEMINI3_EFFORT,
    OPENAI_EFFORT,
    PROVIDERS,
    EffortLevels,
    Preset,
    RequestFields,
    Reserve,
    litellm_fields,
    make_preset,
)

ALL = (*PROVIDERS, "generic")
allowances = st.one_of(st.integers(1, 3000), st.integers(1, 10**7), st.just(MAX_BUDGET))
reserves = st.one_of(
    st.none(),
    st.integers(0, 5000),
    st.builds(
        lambda f, lo, span: Reserve(f, lo, lo + span),
        st.floats(0, 0.99),
        st.integers(0, 3000),
        st.integers(0, 3000),
    ),
)


def caps(body: dict[str, Any]) -> list[int]:
    """Every output cap a body carries (the server applies the one it reads)."""
    return [body[k] for k in ("max_tokens", "max_completion_tokens") if k in body]


def thinking_budget(provider: str, body: dict[str, Any]) -> int | None:
    """The hard thinking budget a body asks for, read back the way each server reads it."""
    if provider == "vllm":
        return body.get("thinking_token_budget")
    if provider == "sglang":
        return body.get("custom_params", {}).get("thinking_budget")
    if provider == "llamacpp":
        return body.get("thinking_budget_tokens")
    if provider == "gemini":
        config = body.get("extra_body", {}).get("google", {}).get("thinking_config", {})
        return config.get("thinking_budget")
    if provider == "anthropic":
        t = body["thinking"]
        return t["budget_tokens"] if t["type"] == "enabled" else 0
    return None


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ALL), allowances, reserves)
def test_no_request_may_generate_more_than_its_allowance(
    provider: str, allowance: int, reserve: Any
) -> None:
    f = Preset(provider, reserve=reserve).fields(allowance)
    out = f.fields
    assert caps(out) and all(c == allowance for c in caps(out))  # the total is bounded
    assert f.allowance == allowance and f.thinking + f.reserve == allowance
    assert 0 <= f.thinking <= allowance and f.reserve >= 0
    sent = thinking_budget(provider, out)
    if f.hard_cap:
        assert sent == f.thinking  # the cap the server enforces is the split's
    if provider == "anthropic":
        t = out["thinking"]
        if t["type"] == "enabled":
            assert 1024 <= t["budget_tokens"] < out["max_tokens"]
        else:
            assert t == {"type": "disabled"} and f.thinking == 0 and f.note
    if provider == "gemini":
        assert f.thinking == 0 or 128 <= f.thinking <= 24576
    if provider == "openai":
        assert set(out) == {"max_completion_tokens", "reasoning_effort"}
        assert out["reasoning_effort"] == OPENAI_EFFORT.level(f.thinking)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PROVIDERS), st.integers(1, 10**6))
def test_the_default_reserve_is_kept_unless_the_provider_forbids_the_thinking(
    provider: str, allowance: int
) -> None:
    f = Preset(provider).fields(allowance)
    expected = DEFAULT_RESERVE.of(allowance)
    if f.note and f.thinking > 0:  # clamped at the provider's maximum
        assert f.reserve > expected
    elif f.note:  # thinking off: under the minimum, or nothing left after the reserve
        assert f.reserve == allowance >= expected
    else:
        assert f.reserve == expected


client_bodies = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.just([{"role": "user", "content": "hi"}])},
    optional={
        "max_tokens": st.integers(1, 10**6),
        "max_completion_tokens": st.integers(1, 10**6),
        "thinking": st.just({"type": "enabled", "budget_tokens": 99999}),
        "thinking_token_budget": st.integers(0, 10**6),
        "custom_params": st.just({"thinking_budget": 10**6, "other": 1}),
        "extra_body": st.just({"google": {"thinking_config": {"include_thoughts": True}}}),
        "temperature": st.floats(0, 2),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL), allowances, client_bodies)
def test_applied_to_a_client_body_the_preset_wins_and_keeps_the_rest(
    provider: str, allowance: int, body: dict[str, Any]
) -> None:
    preset = Preset(provider)
    out = preset.apply(body, allowance)
    f = preset.fields(allowance)
    assert caps(out) and all(c == allowance for c in caps(out))  # no stale cap survives
    if f.hard_cap:
        assert thinking_budget(provider, out) == f.thinking
    for key in ("model", "messages", "temperature"):
        assert out.get(key) == body.get(key)
    if provider == "sglang" and "custom_params" in body:
        assert out["custom_params"]["other"] == 1  # merged, not replaced
    if provider == "gemini" and "extra_body" in body:
        assert out["extra_body"]["google"]["thinking_config"]["include_thoughts"] is True
    assert body.get("max_tokens") is None or "max_tokens" in body  # the input is not mutated


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 10**6),
    st.sampled_from(["both", "max_tokens", "max_completion_tokens"]),
    st.one_of(st.none(), st.just("thinking_token_budget"), st.just("budget")),
    st.one_of(st.none(), st.tuples(st.integers(1, 5000), st.integers(1, 5000))),
    client_bodies,
)
def test_generic_reproduces_the_gateways_per_field_options(
    allowance: int,
    token_param: Any,
    thinking_field: str | None,
    levels: tuple[int, int] | None,
    body: dict[str, Any],
) -> None:
    if levels is not None:
        levels = (min(levels), max(levels) + 1)
    preset = make_preset(
        thinking_field=thinking_field, effort_levels=levels, token_param=token_param
    )
    expected = _per_field(body, allowance, token_param, thinking_field, levels)
    assert preset.apply(body, allowance) == expected


def _per_field(
    body: dict[str, Any],
    allowance: int,
    token_param: str,
    thinking_field: str | None,
    levels: tuple[int, int] | None,
) -> dict[str, Any]:
    """The gateway's per-field options as they were before presets (the reference)."""
    out = dict(body)
    for key in ("max_tokens", "max_completion_tokens"):
        if token_param in ("both", key):
            out[key] = allowance
        else:
            out.pop(key, None)
    if thinking_field:
        out[thinking_field] = allowance
    if levels is not None:
        low, medium = levels
        out["reasoning_effort"] = (
            "low" if allowance <= low else "medium" if allowance <= medium else "high"
        )
    return out


def test_each_provider_reads_its_own_fields() -> None:
    """The exact shapes, one allowance each (the table in the README)."""
    fields = {p: Preset(p).fields(10_000).fields for p in PROVIDERS}
    assert fields == {
        "vllm": {"max_tokens": 10_000, "thinking_token_budget": 9_000},
        "sglang": {"max_tokens": 10_000, "custom_params": {"thinking_budget": 9_000}},
        "llamacpp": {"max_tokens": 10_000, "thinking_budget_tokens": 9_000},
        "openai": {"max_completion_tokens": 10_000, "reasoning_effort": "medium"},
        "gemini": {
            "max_tokens": 10_000,
            "extra_body": {"google": {"thinking_config": {"thinking_budget": 9_000}}},
        },
        "anthropic": {
            "max_tokens": 10_000,
            "thinking": {"type": "enabled", "budget_tokens": 9_000},
        },
    }
    gemini3 = Preset("gemini", effort=GEMINI3_EFFORT).fields(10_000)
    assert gemini3.fields == {"max_tokens": 10_000, "reasoning_effort": "high"}
    assert not gemini3.hard_cap and gemini3.effort == "high"


def test_anthropic_switches_thinking_off_below_its_minimum_and_says_so() -> None:
    # 10 % of 1200 is kept for the answer: 1080 of thinking, above 1024.
    assert Preset("anthropic").fields(1200).fields["thinking"]["budget_tokens"] == 1080
    off = Preset("anthropic").fields(1100)  # 990 of thinking: under 1024
    assert off.fields["thinking"] == {"type": "disabled"}
    assert (off.thinking, off.reserve) == (0, 1100)
    assert "under anthropic's smallest budget (1024)" in off.note
    # A zero reserve still leaves budget_tokens < max_tokens.
    tight = Preset("anthropic", reserve=0).fields(5000)
    assert tight.fields["thinking"]["budget_tokens"] == 4999


def test_gemini_clamps_the_budget_at_its_maximum() -> None:
    f = Preset("gemini").fields(100_000)
    assert (f.thinking, f.reserve) == (24576, 100_000 - 24576)
    assert "clamped" in f.note
    pro = Preset("gemini", thinking_max=32768).fields(100_000)
    assert pro.thinking == 32768


def test_the_reserve_rule() -> None:
    r = Reserve(0.1, 64, 1024)
    assert [r.of(a) for a in (1, 50, 64, 640, 5000, 10_240, 10**6)] == [
        1,
        50,
        64,
        64,
        500,
        1024,
        1024,
    ]
    assert Preset("vllm", reserve=300).fields(1000).reserve == 300
    assert Preset("vllm", reserve=3000).fields(1000).reserve == 1000  # never past the allowance


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_effort_rises_with_the_thinking_cap(a: int, b: int) -> None:
    for levels in (OPENAI_EFFORT, GEMINI3_EFFORT, EffortLevels.from_limits(10, 20)):
        order = levels.levels
        lo, hi = min(a, b), max(a, b)
        assert order.index(levels.level(lo)) <= order.index(levels.level(hi))


@settings(max_examples=200, deadline=None)
@given(allowances, reserves)
def test_litellm_params_are_anthropic_shaped_and_bounded(allowance: int, reserve: Any) -> None:
    f = litellm_fields(allowance, reserve=reserve)
    assert f.fields["max_tokens"] == allowance and f.provider == "litellm"
    t = f.fields["thinking"]
    assert t == {"type": "disabled"} or 1024 <= t["budget_tokens"] < allowance
    e = litellm_fields(allowance, reserve=reserve, effort=OPENAI_EFFORT)
    assert e.fields == {"max_tokens": allowance, "reasoning_effort": e.effort}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Preset("bedrock"), "unknown provider 'bedrock'"),
        (lambda: Preset("vllm", thinking_field="x"), "for the generic preset"),
        (lambda: Preset("anthropic", effort=OPENAI_EFFORT), "adaptive"),
        (lambda: Preset("anthropic", thinking_min=500), "below Anthropic's smallest"),
        (lambda: Preset("gemini", thinking_min=300, thinking_max=200), "below thinking_min"),
        (lambda: Preset("vllm", reserve=-1), "reserve must be >= 0"),
        (lambda: Preset("vllm", reserve=True), "reserve must be a Reserve"),
        (lambda: Reserve(1.5), "fraction must be in [0, 1), got 1.5"),
        (lambda: Reserve(0.1, 100, 10), "floor 100 is above its ceiling 10"),
        (lambda: EffortLevels(("low", "high"), (5, 6)), "2 effort levels need 1 limits"),
        (lambda: EffortLevels(("a", "b", "c"), (9, 3)), "increasing"),
        (lambda: make_preset("openai", thinking_field="x"), "do not combine with --provider"),
        (lambda: Preset("generic", token_param="tokens"), "token_param must be"),  # type: ignore[arg-type]
    ],
)
def test_bad_settings_name_what_is_wrong(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "many", MAX_BUDGET + 1, float("nan")])
def test_an_allowance_must_be_a_whole_number_of_tokens(bad: Any) -> None:
    with pytest.raises(ValueError, match="allowance"):
        Preset("vllm").fields(bad)


def test_request_fields_is_a_plain_result() -> None:
    f = Preset("llamacpp").fields(2000)
    assert isinstance(f, RequestFields)
    assert (f.provider, f.allowance, f.thinking, f.reserve, f.hard_cap, f.effort) == (
        "llamacpp",
        2000,
        1800,
        200,
        True,
        None,
    )
