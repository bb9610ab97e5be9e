"""``shadowprice replay-server``: an OpenAI-compatible server answering with real traces,
tried as a user would (the command, the openai SDK) and piece by piece."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import openai
import pytest
from typer.testing import CliRunner

from shadowprice.cli import app
from shadowprice.engine.replay_server import WRONG_ANSWER, ReplayServer
from shadowprice.engine.run import DEFAULT_TEMPLATE
from shadowprice.traces import TraceSet, load_traces

BUNDLED = load_traces("qwen25-math-math100")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    cmd = [
        sys.executable,
        "-c",
        "from shadowprice.cli import main; main()",
        "replay-server",
        "bundled:qwen25-math-math100",
        "--port",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on http://127.0.0.1:"), line + proc.stderr.read()
    yield line.split()[-1] + "/v1"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_the_openai_sdk_gets_a_sample_of_the_query_it_asked(url: str) -> None:
    client = openai.OpenAI(base_url=url, api_key="unused")
    assert [m.id for m in client.models.list()] == ["replay"]
    rec = BUNDLED.records[5]
    prompt = DEFAULT_TEMPLATE.format(question=rec["question"])  # what `run` sends
    for seed in range(len(rec["samples"])):
        sample = rec["samples"][seed]
        r = client.chat.completions.create(
            model="replay",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=10_000,
            seed=seed,
        )
        text = r.choices[0].message.content or ""
        assert r.usage is not None and r.usage.completion_tokens == sample["tokens"]
        assert r.choices[0].finish_reason == "stop" and len(text.split()) == sample["tokens"]
        want = rec["answer"] if sample["correct"] else WRONG_ANSWER
        assert text.endswith(f"\\boxed{{{want}}}")


def test_a_capped_answer_is_cut_and_a_continuation_finishes_it(url: str) -> None:
    client = openai.OpenAI(base_url=url, api_key="unused")
    rec = BUNDLED.records[0]
    n = rec["samples"][2]["tokens"]
    ask = [{"role": "user", "content": rec["id"]}]
    first = client.chat.completions.create(model="m", messages=ask, max_tokens=40, seed=2)
    assert first.choices[0].finish_reason == "length" and first.usage.completion_tokens == 40  # type: ignore[union-attr]
    partial = first.choices[0].message.content or ""
    rest = client.chat.completions.create(
        model="m",
        messages=[*ask, {"role": "assistant", "content": partial}],
        max_tokens=10_000,
        seed=2,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    assert rest.usage is not None and rest.usage.completion_tokens == n - 40
    assert len((partial + (rest.choices[0].message.content or "")).split()) == n


def test_a_stream_carries_the_answer_and_its_usage(url: str) -> None:
    client = openai.OpenAI(base_url=url, api_key="unused")
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": BUNDLED.ids[1]}],
            max_tokens=50,
            seed=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    used = min(50, BUNDLED.records[1]["samples"][0]["tokens"])
    assert len(text.split()) == used and chunks[-1].usage.completion_tokens == used  # type: ignore[union-attr]
    assert finish == ["length" if used == 50 else "stop"]


def test_a_prompt_of_no_query_is_a_400_that_says_what_to_send(url: str) -> None:
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="send a query's id"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="only n=1"):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": BUNDLED.ids[0]}], n=2
        )
    with pytest.raises(openai.BadRequestError, match="max_tokens must be a positive integer"):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": BUNDLED.ids[0]}], max_tokens=0
        )


def test_seed_picks_sample_seed_mod_n_and_no_seed_draws_one() -> None:
    ts = TraceSet(
        [
            {
                "id": "a",
                "question": "what?",
                "samples": [{"tokens": 3, "correct": True}, {"tokens": 7, "correct": False}],
            }
        ]
    )
    server = ReplayServer(ts)
    ask = {"messages": [{"role": "user", "content": "what?"}]}
    assert [len(server.answer({**ask, "seed": s}).words) for s in range(4)] == [3, 7, 3, 7]
    drawn = {len(server.answer(ask).words) for _ in range(40)}
    assert drawn == {3, 7}
    assert server.answer({**ask, "seed": 0}).words[-1] == "\\boxed{a}"  # no answer: its id


def test_bad_options_are_one_line_errors() -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["replay-server", "bundled:qwen25-math-math100", "--port", "70000"])
    assert r.exit_code == 2 and "--port must be in 0..65535" in r.output
    r = runner.invoke(
        app, ["replay-server", "bundled:qwen25-math-math100", "--tokens-per-second", "0"]
    )
    assert r.exit_code == 2 and "--tokens-per-second must be a positive number" in r.output
    r = runner.invoke(app, ["replay-server", "no-such-file.jsonl"])
    assert r.exit_code == 2 and "no-such-file.jsonl" in r.output
