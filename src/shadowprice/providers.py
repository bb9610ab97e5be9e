"""Provider presets: one allowance of tokens as the exact request fields of each API.

An *allowance* is how many tokens a request may generate in all, thinking included: every API
here counts thinking tokens inside its output cap, and a request that reaches the cap while
still thinking ends with an empty answer and ``finish_reason: "length"``. So a preset splits
the allowance into a **thinking cap** and an **answer reserve** (thinking cap + reserve =
allowance) and sends

- the allowance as the API's output cap (``max_tokens``, or ``max_completion_tokens`` for
  OpenAI): this is what bounds the whole request, on every provider;
- the thinking cap as the API's hard thinking budget where it has one (vLLM
  ``thinking_token_budget``, SGLang ``custom_params.thinking_budget``, llama.cpp
  ``thinking_budget_tokens``, Gemini 2.5 ``thinking_config.thinking_budget``, Anthropic
  ``thinking.budget_tokens``), so a long thought is cut and the reserve is left to answer;
- an effort level where the API has only levels (OpenAI ``reasoning_effort``, Gemini 3
  thinking levels): soft, chosen by the thinking cap, documented and overridable
  (:class:`EffortLevels`).

====================  =======================================  ====================  =========
provider              fields set (allowance A, thinking T)     thinking range        soft part
====================  =======================================  ====================  =========
``vllm``              ``max_tokens=A``,                        0 ... A               none
                      ``thinking_token_budget=T``
``sglang``            ``max_tokens=A``,                        0 ... A               none
                      ``custom_params.thinking_budget=T``
``llamacpp``          ``max_tokens=A``,                        0 ... A               none
                      ``thinking_budget_tokens=T``
``openai``            ``max_completion_tokens=A``,             (level by T)          the level
                      ``reasoning_effort=level(T)``
``gemini``            ``max_tokens=A``, ``extra_body.google.   0, 128 ... 24576      none
                      thinking_config.thinking_budget=T``
                      (or ``reasoning_effort`` with levels)
``anthropic``         ``max_tokens=A``, ``thinking={"type":   off, 1024 ... A - 1    none
                      "enabled", "budget_tokens": T}``
``generic``           today's ``--token-param``,               0 ... A               the level
                      ``--thinking-field``, ``--effort-levels``
====================  =======================================  ====================  =========

Below a provider's smallest thinking budget (Anthropic 1024, Gemini 128) thinking is switched
off (``{"type": "disabled"}``, ``thinking_budget: 0``) and the whole allowance answers; above
its largest (Gemini 24576) the thinking cap is clamped and the rest joins the reserve.
:attr:`RequestFields.note` says so. This module does no I/O: it maps numbers to fields.

Examples
--------
>>> p = Preset("anthropic")
>>> p.fields(8000).fields
{'max_tokens': 8000, 'thinking': {'type': 'enabled', 'budget_tokens': 7200}}
>>> p.apply({"model": "claude", "max_completion_tokens": 99}, 900)["thinking"]
{'type': 'disabled'}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .limits import check_budget

__all__ = [
    "DEFAULT_RESERVE",
    "GEMINI3_EFFORT",
    "OPENAI_EFFORT",
    "PROVIDERS",
    "EffortLevels",
    "Preset",
    "RequestFields",
    "Reserve",
    "litellm_fields",
    "make_preset",
]

#: The providers with a preset (``generic`` reproduces the gateway's per-field options).
PROVIDERS: tuple[str, ...] = ("vllm", "sglang", "llamacpp", "openai", "gemini", "anthropic")

TokenParam = Literal["both", "max_tokens", "max_completion_tokens"]
_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")

#: Anthropic's smallest ``thinking.budget_tokens``.
ANTHROPIC_MIN_THINKING = 1024
#: Gemini 2.5's thinking budget range used by default: under 128 thinking is off (Pro accepts
#: 128 ... 32768 and cannot switch thinking off; Flash 0 ... 24576; Flash-Lite 512 ... 24576).
GEMINI_THINKING = (128, 24576)


@dataclass(frozen=True)
class Reserve:
    """The answer reserve: ``fraction`` of the allowance, within ``[floor, ceiling]`` tokens.

    Never more than the allowance itself. The default (10 %, 64 ... 1024 tokens) leaves room
    for a short final answer (a boxed number needs a few dozen tokens, a paragraph a few
    hundred) and for the tokens a server spends closing a cut thought (``</think>``).

    Parameters
    ----------
    fraction : float
        Share of the allowance, in [0, 1).
    floor, ceiling : int
        Bounds in tokens, ``0 <= floor <= ceiling``.
    """

    fraction: float = 0.1
    floor: int = 64
    ceiling: int = 1024

    def __post_init__(self) -> None:
        if not (isinstance(self.fraction, int | float) and 0 <= self.fraction < 1):
            raise ValueError(f"reserve fraction must be in [0, 1), got {self.fraction!r}")
        for name in ("floor", "ceiling"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"reserve {name} must be a whole number of tokens >= 0, got {v!r}")
        if self.floor > self.ceiling:
            raise ValueError(
                f"reserve floor {self.floor} is above its ceiling {self.ceiling}: give floor "
                f"<= ceiling"
            )

    def of(self, allowance: int) -> int:
        """Tokens kept for the answer out of ``allowance`` (0 ... allowance)."""
        share = math.floor(self.fraction * allowance + 0.5)
        return min(allowance, max(self.floor, min(self.ceiling, share)))


#: The reserve every preset uses unless told otherwise (``generic`` keeps none, as before).
DEFAULT_RESERVE = Reserve()


@dataclass(frozen=True)
class EffortLevels:
    """Effort levels chosen by the thinking cap T: ``levels[i]`` while T <= ``limits[i]``.

    Parameters
    ----------
    levels : tuple of str
        From least to most effort, as the API spells them.
    limits : tuple of int
        One fewer than ``levels``, strictly increasing tokens; a cap above the last limit gets
        the last level.

    Examples
    --------
    >>> OPENAI_EFFORT.level(5000), OPENAI_EFFORT.level(20000), OPENAI_EFFORT.level(40000)
    ('low', 'medium', 'high')
    """

    levels: tuple[str, ...] = ("low", "medium", "high")
    limits: tuple[int, ...] = (8191, 24575)

    def __post_init__(self) -> None:
        if not self.levels or not all(isinstance(x, str) and x for x in self.levels):
            raise ValueError(f"effort levels must be non-empty names, got {self.levels!r}")
        if len(self.limits) != len(self.levels) - 1:
            raise ValueError(
                f"{len(self.levels)} effort levels need {len(self.levels) - 1} limits, got "
                f"{len(self.limits)}"
            )
        previous = 0
        for v in self.limits:
            if isinstance(v, bool) or not isinstance(v, int) or v <= previous:
                raise ValueError(
                    f"effort limits must be increasing positive token counts, got {self.limits!r}"
                )
            previous = v

    @classmethod
    def from_limits(cls, low: int, medium: int) -> EffortLevels:
        """The gateway's ``--effort-levels LOW,MEDIUM``: low up to LOW, medium up to MEDIUM."""
        return cls(("low", "medium", "high"), (low, medium))

    def level(self, tokens: int) -> str:
        """The level for a thinking cap of ``tokens``."""
        for name, limit in zip(self.levels, self.limits, strict=False):
            if tokens <= limit:
                return name
        return self.levels[-1]


#: OpenAI ``reasoning_effort``: the level whose nominal thinking budget fits the cap, by the
#: one published mapping (Gemini's OpenAI layer: low 1024, medium 8192, high 24576 tokens).
OPENAI_EFFORT = EffortLevels(("low", "medium", "high"), (8191, 24575))
#: Gemini 3 thinking levels through ``reasoning_effort`` (Gemini 3 Pro knows only low, high).
GEMINI3_EFFORT = EffortLevels(("low", "high"), (8191,))


@dataclass(frozen=True)
class RequestFields:
    """An allowance as one provider's request fields.

    Attributes
    ----------
    provider : str
    allowance : int
        Tokens the request may generate in all (its output cap).
    thinking : int
        The thinking cap T (0: thinking off). Enforced by the server when ``hard_cap``;
        otherwise the tokens the effort level was chosen for.
    reserve : int
        ``allowance - thinking``: tokens left to answer after the longest thought.
    hard_cap : bool
        The provider cuts thinking at ``thinking`` tokens (a field was set for it).
    effort : str or None
        The effort level sent, if any (soft: the server decides how much it thinks).
    fields : dict
        The exact fields to merge into the request body (see :meth:`apply`).
    note : str
        Why the split is not the default one (thinking off below the provider's minimum,
        clamped at its maximum), or empty.
    """

    provider: str
    allowance: int
    thinking: int
    reserve: int
    hard_cap: bool
    effort: str | None
    fields: dict[str, Any]
    note: str = ""

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``body`` with these fields set.

        Nested fields (``custom_params``, ``extra_body.google.thinking_config``) are merged
        into what the body already holds; an output cap this preset does not use
        (``max_tokens`` or ``max_completion_tokens``) is removed, so the body never carries
        two caps that disagree.
        """
        out = dict(body)
        for name in _TOKEN_FIELDS:
            if name not in self.fields:
                out.pop(name, None)
        return _merge(out, self.fields)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, dicts merged key by key (``base``'s are copied)."""
    for key, value in extra.items():
        old = base.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping) and key != "thinking":
            base[key] = _merge(dict(old), value)
        else:
            base[key] = value
    return base


@dataclass(frozen=True)
class Preset:
    """How one provider is asked for an allowance: see the module docstring.

    Parameters
    ----------
    provider : str
        One of :data:`PROVIDERS`, or ``"generic"`` (the gateway's per-field options).
    reserve : Reserve or int, optional
        The answer reserve: a :class:`Reserve` rule or a fixed number of tokens. Default
        :data:`DEFAULT_RESERVE`; ``generic`` keeps none (its thinking field gets the whole
        allowance, as the gateway's ``--thinking-field`` always did).
    effort : EffortLevels, optional
        Send ``reasoning_effort`` chosen by the thinking cap. Default: :data:`OPENAI_EFFORT`
        for ``openai``, none elsewhere. For ``gemini`` it replaces the thinking budget (Gemini
        3 levels, e.g. :data:`GEMINI3_EFFORT`); for vLLM, SGLang and llama.cpp it is sent next
        to the hard budget as a hint to the chat template. Anthropic's effort is adaptive
        (soft) and not offered: its budget is hard.
    thinking_min, thinking_max : int, optional
        The provider's thinking-budget range: below ``thinking_min`` thinking is off, above
        ``thinking_max`` it is clamped. Defaults: Anthropic 1024 and none; Gemini 128 and
        24576 (Flash-Lite needs 512; Pro accepts up to 32768); others 0 and none.
    thinking_field : str, optional
        ``generic`` only: the top-level field that gets the thinking cap (e.g.
        ``thinking_token_budget``).
    token_param : {'both', 'max_tokens', 'max_completion_tokens'}
        ``generic`` only: which output cap(s) carry the allowance.

    Raises
    ------
    ValueError
        Naming the setting: an unknown provider, an option the provider does not take, a
        range that is empty.
    """

    provider: str = "generic"
    reserve: Reserve | int | None = None
    effort: EffortLevels | None = None
    thinking_min: int | None = None
    thinking_max: int | None = None
    thinking_field: str | None = None
    token_param: TokenParam = "both"
    _range: tuple[int, int | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.provider not in (*PROVIDERS, "generic"):
            raise ValueError(
                f"unknown provider {self.provider!r}; choose one of {', '.join(PROVIDERS)} "
                f"or generic"
            )
        generic = self.provider == "generic"
        if not generic and (self.thinking_field is not None or self.token_param != "both"):
            raise ValueError(
                f"thinking_field and token_param are for the generic preset; {self.provider} "
                f"has its own fields"
            )
        if self.token_param not in ("both", *_TOKEN_FIELDS):
            raise ValueError(
                f"token_param must be both, max_tokens or max_completion_tokens, got "
                f"{self.token_param!r}"
            )
        if self.thinking_field is not None and not (
            isinstance(self.thinking_field, str) and self.thinking_field.strip()
        ):
            raise ValueError(f"thinking_field must be a field name, got {self.thinking_field!r}")
        if self.provider == "anthropic" and self.effort is not None:
            raise ValueError(
                "anthropic takes a hard thinking budget; its effort setting is adaptive (soft) "
                "and not offered: leave effort unset"
            )
        if isinstance(self.reserve, bool) or not isinstance(self.reserve, Reserve | int | None):
            raise ValueError(
                f"reserve must be a Reserve or a number of tokens, got {self.reserve!r}"
            )
        if isinstance(self.reserve, int) and self.reserve < 0:
            raise ValueError(f"reserve must be >= 0 tokens, got {self.reserve}")
        object.__setattr__(self, "_range", self._thinking_range())

    def _thinking_range(self) -> tuple[int, int | None]:
        low_default, high_default = {
            "anthropic": (ANTHROPIC_MIN_THINKING, None),
            "gemini": GEMINI_THINKING,
        }.get(self.provider, (0, None))
        low = low_default if self.thinking_min is None else self.thinking_min
        high = high_default if self.thinking_max is None else self.thinking_max
        for name, v in (("thinking_min", low), ("thinking_max", high)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"{name} must be a whole number of tokens >= 0, got {v!r}")
        if self.provider == "anthropic" and low < ANTHROPIC_MIN_THINKING:
            raise ValueError(
                f"thinking_min {low} is below Anthropic's smallest budget_tokens "
                f"({ANTHROPIC_MIN_THINKING}); the API would refuse the request"
            )
        if high is not None and high < low:
            raise ValueError(f"thinking_max {high} is below thinking_min {low}")
        return low, high

    @property
    def hard_cap(self) -> bool:
        """Whether this preset sends a thinking budget the server enforces."""
        if self.provider == "generic":
            return self.thinking_field is not None
        if self.provider == "gemini":
            return self.effort is None
        return self.provider != "openai"

    @property
    def effort_levels(self) -> EffortLevels | None:
        """The effort levels sent (the provider's default where none was given)."""
        return OPENAI_EFFORT if self.provider == "openai" and self.effort is None else self.effort

    def _reserve(self, allowance: int) -> int:
        rule = self.reserve
        if rule is None:
            rule = 0 if self.provider == "generic" else DEFAULT_RESERVE
        kept = rule.of(allowance) if isinstance(rule, Reserve) else min(rule, allowance)
        if self.provider == "anthropic":
            kept = max(kept, 1)  # budget_tokens must stay below max_tokens
        return kept

    def split(self, allowance: int) -> tuple[int, int, str]:
        """(thinking cap, reserve, note) of ``allowance``; the two add up to it.

        Raises
        ------
        ValueError
            When ``allowance`` is not a whole number of tokens in 1 ... ``MAX_BUDGET``.
        """
        a = check_budget(allowance, "allowance")
        thinking = a - self._reserve(a)
        low, high = self._range
        note = ""
        if not self.hard_cap:
            return thinking, a - thinking, note
        if thinking < low:
            note = (
                f"thinking off: {thinking} tokens of thinking is under {self.provider}'s "
                f"smallest budget ({low})"
            )
            thinking = 0
        elif thinking == 0:
            note = "thinking off: the answer reserve takes the whole allowance"
        elif high is not None and thinking > high:
            note = (
                f"thinking clamped to {self.provider}'s largest budget ({high}); the rest "
                f"joins the answer reserve"
            )
            thinking = high
        return thinking, a - thinking, note

    def fields(self, allowance: int) -> RequestFields:
        """The request fields that ask this provider for at most ``allowance`` tokens.

        Parameters
        ----------
        allowance : int
            Tokens the request may generate in all, 1 ... ``MAX_BUDGET``.

        Returns
        -------
        RequestFields
        """
        thinking, reserve, note = self.split(allowance)
        a = thinking + reserve
        levels = self.effort_levels
        effort = levels.level(thinking) if levels is not None else None
        out = self._caps(a)
        if self.hard_cap:
            out.update(self._budget(thinking))
        if effort is not None:
            out["reasoning_effort"] = effort
        return RequestFields(self.provider, a, thinking, reserve, self.hard_cap, effort, out, note)

    def _caps(self, allowance: int) -> dict[str, Any]:
        if self.provider == "openai":
            return {"max_completion_tokens": allowance}
        if self.provider == "generic" and self.token_param != "both":
            return {self.token_param: allowance}
        if self.provider == "generic":
            return {"max_tokens": allowance, "max_completion_tokens": allowance}
        return {"max_tokens": allowance}

    def _budget(self, thinking: int) -> dict[str, Any]:
        if self.provider == "vllm":
            return {"thinking_token_budget": thinking}
        if self.provider == "sglang":
            return {"custom_params": {"thinking_budget": thinking}}
        if self.provider == "llamacpp":
            return {"thinking_budget_tokens": thinking}
        if self.provider == "gemini":
            config = {"thinking_config": {"thinking_budget": thinking}}
            return {"extra_body": {"google": config}}
        if self.provider == "anthropic":
            if thinking == 0:
                return {"thinking": {"type": "disabled"}}
            return {"thinking": {"type": "enabled", "budget_tokens": thinking}}
        assert self.thinking_field is not None  # generic with a hard cap
        return {self.thinking_field: thinking}

    def apply(self, body: Mapping[str, Any], allowance: int) -> dict[str, Any]:
        """A copy of ``body`` asking for at most ``allowance`` tokens (see
        :meth:`RequestFields.apply`): the gateway's and the batch writer's one call."""
        return self.fields(allowance).apply(body)


def make_preset(
    provider: str | None = None,
    *,
    thinking_field: str | None = None,
    effort_levels: tuple[int, int] | None = None,
    token_param: TokenParam = "both",
    reserve: Reserve | int | None = None,
) -> Preset:
    """A preset from command-line options: ``--provider``, or the generic per-field ones.

    ``provider`` None (or ``"generic"``) reproduces the gateway's ``--token-param``,
    ``--thinking-field`` and ``--effort-levels LOW,MEDIUM``; a named provider takes none of
    those (its fields are its own), except ``effort_levels`` as the thresholds of its levels.

    Raises
    ------
    ValueError
        Naming the option that does not fit the provider.
    """
    name = provider or "generic"
    effort = EffortLevels.from_limits(*effort_levels) if effort_levels is not None else None
    if name != "generic" and (thinking_field is not None or token_param != "both"):
        raise ValueError(
            f"--thinking-field and --token-param do not combine with --provider {name}: the "
            f"preset sets {name}'s own fields"
        )
    return Preset(
        name, reserve=reserve, effort=effort, thinking_field=thinking_field, token_param=token_param
    )


def litellm_fields(
    allowance: int, *, reserve: Reserve | int | None = None, effort: EffortLevels | None = None
) -> RequestFields:
    """LiteLLM's provider-neutral parameters for ``allowance``: LiteLLM translates them.

    ``max_tokens`` is the allowance (LiteLLM sends it as ``max_completion_tokens`` where the
    provider wants that). Without ``effort``: ``thinking={"type": "enabled",
    "budget_tokens": T}`` with T = allowance - reserve when T is at least 1024 (the strictest
    provider's minimum, Anthropic's), else ``{"type": "disabled"}``. With ``effort``:
    ``reasoning_effort`` chosen by T instead (soft).
    """
    preset = Preset("anthropic" if effort is None else "openai", reserve=reserve, effort=effort)
    f = preset.fields(allowance)
    out: dict[str, Any] = {"max_tokens": f.allowance}
    if effort is None:
        out["thinking"] = f.fields["thinking"]
    else:
        out["reasoning_effort"] = f.effort
    return RequestFields(
        "litellm", f.allowance, f.thinking, f.reserve, f.hard_cap, f.effort, out, f.note
    )
