"""``shadowprice allocate --predictor``: queries that carry only id and text."""

import json

from typer.testing import CliRunner

from shadowprice.cli import app

runner = CliRunner()

QUERIES = [
    {"id": "easy", "question": "What is 2 + 3?"},
    {
        "id": "mid",
        "question": "Find all real $x$ with $x^4 - 5x^2 + 4 = 0$; give the sum of their squares.",
    },
    {
        "id": "hard",
        "question": "Let $p$ be an odd prime. Count the solutions of "
        "$x^2 + y^2 \\equiv 1 \\pmod p$ and evaluate it for $p = 101$.",
    },
]


def _write(tmp_path, rows):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_allocate_with_the_default_predictor_expected_and_point(tmp_path):
    path = _write(tmp_path, QUERIES)
    out = tmp_path / "b.jsonl"
    for extra in ([], ["--point"]):
        res = runner.invoke(
            app,
            [
                "allocate",
                str(path),
                "--per-query",
                "250",
                "--predictor",
                "default",
                "--family",
                "gamma",
                "--beta",
                "0.06",
                "-o",
                str(out),
                "--format",
                "json",
                *extra,
            ],
        )
        assert res.exit_code == 0, res.output
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == ["easy", "mid", "hard"]
        assert sum(r["budget"] for r in rows) <= 750
        summary = json.loads(res.stdout)
        assert summary["funded"] >= 1 and summary["family"] == "gamma"


def test_predictor_needs_text_and_a_real_path(tmp_path):
    path = _write(tmp_path, [{"id": "x", "tau": 100}])
    res = runner.invoke(
        app, ["allocate", str(path), "--per-query", "250", "--predictor", "default"]
    )
    assert res.exit_code == 2
    assert "line 1" in res.output and "text" in res.output
    good = _write(tmp_path, QUERIES)
    res = runner.invoke(
        app, ["allocate", str(good), "--per-query", "250", "--predictor", str(tmp_path / "missing")]
    )
    assert res.exit_code == 2 and "no such predictor" in res.output
