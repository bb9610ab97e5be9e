"""``shadowprice allocate`` and the query-file reader behind it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shadowprice import GammaSCurve, LogisticCurve, ShiftedSurge, allocate
from shadowprice.cli import app
from shadowprice.cli.queries import QueryFileError, read_query_file


def read_queries(path: Path, family: str = "surge", **kw: float):  # type: ignore[no-untyped-def]
    qf = read_query_file(path)
    return qf.ids(), qf.curves(family, **kw), qf.limits()


runner = CliRunner()
EXE = Path(sys.executable).parent / "shadowprice"

TAUS = [150, 300, 900, 220, 480]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def qfile(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "queries.jsonl",
        [{"id": f"q{i}", "tau": t, "question": "ignored"} for i, t in enumerate(TAUS)],
    )


def parse_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- outputs -------------------------------------------------------------------------------


def test_budgets_to_stdout_summary_to_stderr(qfile: Path) -> None:
    r = runner.invoke(app, ["allocate", str(qfile), "--budget", "1200"])
    assert r.exit_code == 0, r.output
    rows = parse_lines(r.stdout)
    assert [x["id"] for x in rows] == [f"q{i}" for i in range(5)]
    assert all(set(x) == {"id", "budget", "funded"} for x in rows)
    assert sum(x["budget"] for x in rows) <= 1200
    assert all((x["budget"] > 0) == x["funded"] for x in rows)
    # Same as the library call.
    ref = allocate(ShiftedSurge(np.array(TAUS, float), 1.5, 0.005), 1200, "clear")
    assert [x["budget"] for x in rows] == ref.budgets.tolist()
    assert "price" in r.stderr and "abandoned" in r.stderr and "leftover" in r.stderr
    assert "price" not in r.stdout


def test_output_file_puts_summary_on_stdout(qfile: Path, tmp_path: Path) -> None:
    out = tmp_path / "budgets.jsonl"
    r = runner.invoke(app, ["allocate", str(qfile), "--per-query", "240", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = parse_lines(out.read_text())
    assert len(rows) == 5 and sum(x["budget"] for x in rows) <= 1200
    assert "expected utility" in r.stdout and "status" in r.stdout
    assert r.stderr == ""


def test_json_summary(qfile: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.jsonl"
    r = runner.invoke(
        app, ["allocate", str(qfile), "--budget", "1200", "--format", "json", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    for key in (
        "price",
        "funded",
        "abandoned",
        "expected_utility",
        "leftover",
        "status",
        "message",
        "budget",
        "policy",
    ):
        assert key in s
    assert s["budget"] == 1200 and s["funded"] + s["abandoned"] == 5
    assert s["leftover"] == 1200 - sum(x["budget"] for x in parse_lines(out.read_text()))
    # Without -o the JSON summary goes to stderr, budgets to stdout.
    r2 = runner.invoke(app, ["allocate", str(qfile), "--budget", "1200", "--format", "json"])
    assert json.loads(r2.stderr)["budget"] == 1200 and len(parse_lines(r2.stdout)) == 5


@pytest.mark.parametrize(
    "policy", ["clear", "uniform", "oracle", "market", "proportional", "greedy", "length"]
)
def test_every_policy_runs(qfile: Path, policy: str) -> None:
    r = runner.invoke(
        app,
        [
            "allocate",
            str(qfile),
            "--budget",
            "1500",
            "--policy",
            policy,
            "--granularity",
            "16",
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = parse_lines(r.stdout)
    assert sum(x["budget"] for x in rows) <= 1500
    assert all(x["budget"] % 16 == 0 for x in rows)
    assert json.loads(r.stderr)["policy"] == policy


def test_csv_and_stdin(tmp_path: Path, qfile: Path) -> None:
    csv = tmp_path / "q.csv"
    csv.write_text("id,tau\n" + "".join(f"q{i},{t}\n" for i, t in enumerate(TAUS)))
    a = runner.invoke(app, ["allocate", str(csv), "--budget", "1200"])
    b = runner.invoke(app, ["allocate", "-", "--budget", "1200"], input=qfile.read_text())
    c = runner.invoke(app, ["allocate", str(qfile), "--budget", "1200"])
    assert a.exit_code == b.exit_code == c.exit_code == 0
    assert a.stdout == b.stdout == c.stdout


def test_families(tmp_path: Path) -> None:
    g = write_jsonl(
        tmp_path / "g.jsonl",
        [
            {"id": "a", "tau": 100, "beta": 0.01, "p": 0.9},
            {"id": "b", "tau": 400, "beta": 0.004, "p": 0.5},
        ],
    )
    r = runner.invoke(
        app, ["allocate", str(g), "--budget", "600", "--family", "gamma", "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    _, curve, _ = read_queries(g, "gamma")
    assert isinstance(curve, GammaSCurve) and curve.p.tolist() == [0.9, 0.5]
    lg = write_jsonl(
        tmp_path / "l.jsonl",
        [{"id": "a", "mu": 300, "scale": 50}, {"id": "b", "mu": 700, "scale": 80, "p": 0.6}],
    )
    r = runner.invoke(app, ["allocate", str(lg), "--budget", "900", "--family", "logistic"])
    assert r.exit_code == 0, r.output
    _, curve, _ = read_queries(lg, "logistic")
    assert isinstance(curve, LogisticCurve) and curve.p.tolist() == [1.0, 0.6]


def test_per_query_parameters_override_cli(tmp_path: Path, qfile: Path) -> None:
    with_beta = write_jsonl(
        tmp_path / "b.jsonl", [{"id": f"q{i}", "tau": t, "beta": 0.002} for i, t in enumerate(TAUS)]
    )
    a = runner.invoke(app, ["allocate", str(with_beta), "--budget", "1500", "--beta", "0.02"])
    b = runner.invoke(app, ["allocate", str(qfile), "--budget", "1500", "--beta", "0.002"])
    assert a.exit_code == b.exit_code == 0
    assert a.stdout == b.stdout
    # Mixed: a row without beta falls back to --beta.
    mixed = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "a", "tau": 10, "beta": 0.01}, {"id": "b", "tau": 20}]
    )
    _, curve, _ = read_queries(mixed, "surge", beta=0.003)
    assert isinstance(curve, ShiftedSurge) and curve.beta.tolist() == [0.01, 0.003]


def test_per_query_limits(tmp_path: Path) -> None:
    q = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": "a", "tau": 100, "max_tokens": 150},
            {"id": "b", "tau": 200},
            {"id": "c", "tau": 5000, "floor": 64},  # hopeless but guaranteed its floor
            {"id": "d", "tau": 150, "min_tokens": 300},
        ],
    )
    r = runner.invoke(app, ["allocate", str(q), "--budget", "1200", "--max-tokens", "500"])
    assert r.exit_code == 0, r.output
    rows = {x["id"]: x for x in parse_lines(r.stdout)}
    assert rows["a"]["budget"] <= 150
    assert rows["b"]["budget"] <= 500
    assert rows["c"]["funded"] and rows["c"]["budget"] >= 64
    assert rows["d"]["budget"] == 0 or rows["d"]["budget"] >= 300
    _, _, limits = read_queries(q)
    assert set(limits) == {"floor", "min_tokens", "max_tokens"}
    assert np.isnan(limits["floor"][0]) and limits["floor"][2] == 64


def test_subprocess_on_real_files(tmp_path: Path) -> None:
    q = write_jsonl(
        tmp_path / "queries.jsonl", [{"id": i, "tau": t} for i, t in enumerate(TAUS)]
    )  # integer ids are fine
    out = tmp_path / "out.jsonl"
    p = subprocess.run(
        [str(EXE), "allocate", str(q), "--per-query", "300", "-o", str(out), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["budget"] == 1500
    assert [x["id"] for x in parse_lines(out.read_text())] == [str(i) for i in range(5)]
    p = subprocess.run(
        [str(EXE), "allocate", str(q), "--budget", "1500"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0 and len(parse_lines(p.stdout)) == 5 and "price" in p.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "tau": 10}\n{"id": "b", "tau": -5}\n')
    p = subprocess.run(
        [str(EXE), "allocate", str(bad), "--budget", "100"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2 and p.stdout == ""
    assert 'bad.jsonl line 2: field "tau" must be a finite non-negative number, got -5' in p.stderr


# -- bad input: exit 2, message names file, line and field ---------------------------------

JSONL_CASES = [
    # (file text, expected fragment)
    ('{"id": "a", "tau": 10}\n{"id": "b", "tau": 1\n', "line 2: not valid JSON"),
    ("[1, 2]\n", "line 1: expected a JSON object, got list"),
    ('"just a string"\n', "line 1: expected a JSON object, got str"),
    ('{"id": "a", "tau": 10}\n{"id": "b"}\n', 'line 2: field "tau" is missing'),
    ('{"tau": 10}\n', 'line 1: field "id" is missing'),
    (
        '{"id": "a", "tau": 10}\n\n{"id": "b", "tau": NaN}\n',
        'line 3: field "tau" must be a finite non-negative number, got nan',
    ),
    ('{"id": "a", "tau": Infinity}\n', 'line 1: field "tau" must be a finite non-negative'),
    (
        '{"id": "a", "tau": -5}\n',
        'line 1: field "tau" must be a finite non-negative number, got -5',
    ),
    ('{"id": "a", "tau": "abc"}\n', 'field "tau" must be a finite non-negative number, got "abc"'),
    ('{"id": "a", "tau": true}\n', 'line 1: field "tau" must be'),
    ('{"id": "a", "tau": 1}\n{"id": "a", "tau": 2}\n', 'line 2: field "id" duplicates'),
    ('{"id": [1], "tau": 1}\n', 'line 1: field "id" must be a string or an integer'),
    ('{"id": "a", "tau": 1, "beta": 0}\n', 'line 1: field "beta" must be a finite positive'),
    ('{"id": "a", "tau": 1, "floor": -1}\n', 'line 1: field "floor" must be'),
    ('{"id": "a", "tau": 1, "max_tokens": "lots"}\n', 'line 1: field "max_tokens" must be'),
    ("", "no queries"),
    ("\n\n", "no queries"),
]


@pytest.mark.parametrize(("text", "fragment"), JSONL_CASES)
def test_bad_jsonl_exits_2(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "queries.jsonl"
    f.write_text(text)
    r = runner.invoke(app, ["allocate", str(f), "--budget", "1000"])
    assert r.exit_code == 2, r.output
    assert "queries.jsonl" in r.stderr and fragment in r.stderr, r.stderr
    assert r.stdout == ""
    with pytest.raises(QueryFileError):
        read_queries(f)


CSV_CASES = [
    (
        "id,tau\na,10\nb,-5\n",
        'q.csv line 3: field "tau" must be a finite non-negative number, got -5',
    ),
    (
        "id,tau\na,10\nb,abc\n",
        'q.csv line 3: field "tau" must be a finite non-negative number, got "abc"',
    ),
    ("id,tau\na,nan\n", 'line 2: field "tau" must be a finite non-negative number, got nan'),
    ("id,tau\na,inf\n", 'line 2: field "tau" must be a finite non-negative number, got inf'),
    ("id,tau\na,10\nb,\n", 'line 3: field "tau" is missing'),
    ("id,mu\na,10\n", 'line 2: field "tau" is missing'),
    ("id,tau\na,1\na,2\n", 'line 3: field "id" duplicates id "a" of line 2'),
    ("id,tau\n,1\n", 'line 2: field "id" is missing'),
    ("id,tau\na,1,7\n", "line 2: row has 3 cells but the header has 2 columns"),
    ("id,tau\n", "no queries"),
    ("", "no queries"),
]


@pytest.mark.parametrize(("text", "fragment"), CSV_CASES)
def test_bad_csv_exits_2(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "q.csv"
    f.write_text(text)
    r = runner.invoke(app, ["allocate", str(f), "--budget", "1000"])
    assert r.exit_code == 2, r.output
    assert fragment in r.stderr, r.stderr


def test_family_fields_are_checked(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "g.jsonl", [{"id": "a", "tau": 10, "p": 1.5}])
    r = runner.invoke(app, ["allocate", str(f), "--budget", "100", "--family", "gamma"])
    assert r.exit_code == 2 and 'line 1: field "p" must be a number in [0, 1], got 1.5' in r.stderr
    f = write_jsonl(tmp_path / "l.jsonl", [{"id": "a", "mu": 10}])
    r = runner.invoke(app, ["allocate", str(f), "--budget", "100", "--family", "logistic"])
    assert r.exit_code == 2 and 'line 1: field "scale" is missing' in r.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--budget", "0"], "--budget = 0 is out of range"),
        (["--budget", "-10"], "--budget = -10 is out of range"),
        (["--budget", "99999999999999999999"], "out of range: give 1 to 1e+15 tokens"),
        (["--per-query", "1e308"], "out of range: give 1 to 1e+15 tokens"),
        (["--per-query", "0"], "--per-query must be a positive"),
        (["--per-query", "-3"], "--per-query must be a positive"),
        (["--per-query", "0.1"], "less than one token"),
        ([], "exactly one of --budget"),
        (["--budget", "100", "--per-query", "20"], "exactly one of --budget"),
        (["--budget", "100", "--policy", "magic"], "unknown policy 'magic'; choose one of"),
        (["--budget", "100", "--family", "weibull"], "unknown --family"),
        (["--budget", "100", "--format", "xml"], "unknown --format"),
        (["--budget", "100", "--alpha", "0"], "alpha[0] = 0.0: must be positive"),
        (["--budget", "100", "--alpha", "-1"], "alpha[0] = -1.0: must be positive"),
        (["--budget", "100", "--beta", "nan"], "beta[0] = nan: must be positive"),
        (["--budget", "100", "--granularity", "0"], "granularity = 0"),
        (["--budget", "100", "--max-tokens", "-1"], "max_tokens = -1.0: must be a number"),
        (
            ["--budget", "100", "--min-tokens", "500", "--max-tokens", "100"],
            "min_tokens 500 exceeds max_tokens 100",
        ),
    ],
)
def test_bad_options_exit_2(qfile: Path, args: list[str], fragment: str) -> None:
    r = runner.invoke(app, ["allocate", str(qfile), *args])
    assert r.exit_code == 2, r.output
    assert fragment in r.stderr, r.stderr


def test_missing_file_and_infeasible_floors(tmp_path: Path) -> None:
    r = runner.invoke(app, ["allocate", str(tmp_path / "nope.jsonl"), "--budget", "10"])
    assert r.exit_code == 2 and "nope.jsonl: no such file" in r.stderr
    f = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "tau": 1, "floor": 50, "max_tokens": 10}])
    r = runner.invoke(app, ["allocate", str(f), "--budget", "100"])
    assert r.exit_code == 2 and "floor" in r.stderr


def test_query_file_error_attributes(tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text('{"id": "a", "tau": 1}\n{"id": "b", "tau": -2}\n')
    with pytest.raises(QueryFileError) as ei:
        read_queries(f)
    e = ei.value
    assert (e.path, e.line, e.field) == (str(f), 2, "tau") and isinstance(e, ValueError)
