"""What a new user can throw at the command line: bad files, absurd numbers, broken servers.

Every case asserts the exit status, the one-line message, and that no input changed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shadowprice.cli import app

runner = CliRunner()

QUERIES = [
    {"id": f"q{i}", "question": f"need=20 ans={i} what is {i}?", "answer": str(i), "tau": t}
    for i, t in enumerate([120, 300, 90, 600])
]


def write(path: Path, rows: list[dict[str, Any]], *, newline_at_end: bool = True) -> Path:
    text = "\n".join(json.dumps(r) for r in rows) + ("\n" if newline_at_end else "")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def qfile(tmp_path: Path) -> Path:
    return write(tmp_path / "q.jsonl", QUERIES)


def invoke(args: list[str], inputs: list[Path] | tuple[Path, ...] = ()) -> Any:
    """Run the CLI; check that every input file is byte-identical afterwards."""
    before = {p: p.read_bytes() for p in inputs if p.is_file()}
    result = runner.invoke(app, [str(a) for a in args])
    for p, data in before.items():
        assert p.read_bytes() == data, f"{p} changed"
    assert "Traceback" not in result.output
    assert "internal error" not in result.output, result.output
    return result


def one_line_error(result: Any, fragment: str) -> None:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("shadowprice: error: "), result.stderr
    assert fragment in lines[0], lines[0]


# -- inputs are read-only --------------------------------------------------------------


def test_allocate_refuses_to_write_over_its_input(qfile: Path, tmp_path: Path) -> None:
    r = invoke(["allocate", qfile, "--budget", "900", "-o", qfile], [qfile])
    one_line_error(r, "is the input file")
    # Another spelling of the same file (relative to a symlinked folder) is the same inode.
    link = tmp_path / "alias"
    link.symlink_to(tmp_path)
    r = invoke(["allocate", qfile, "--budget", "900", "-o", link / "q.jsonl"], [qfile])
    one_line_error(r, "is the input file")


def test_predictor_predict_refuses_to_write_over_its_input(qfile: Path) -> None:
    r = invoke(["predictor", "predict", "default", qfile, "-o", qfile], [qfile])
    one_line_error(r, "is the input file")


def test_run_and_collect_refuse_to_append_to_their_input(qfile: Path) -> None:
    base = ["--endpoint", "http://127.0.0.1:9", "--model", "m", "-o", qfile]
    r = invoke(["run", qfile, "--budget", "100", *base], [qfile])
    one_line_error(r, "is the input file")
    r = invoke(["collect", qfile, *base], [qfile])
    one_line_error(r, "is the input file")


def test_output_onto_a_directory_or_a_file_where_a_folder_is_expected(
    qfile: Path, tmp_path: Path
) -> None:
    r = invoke(["allocate", qfile, "--budget", "900", "-o", tmp_path], [qfile])
    one_line_error(r, "is a directory")
    train = write(
        tmp_path / "train.jsonl", [{"question": f"q {i} x", "target": 10 + i} for i in range(6)]
    )
    r = invoke(["predictor", "fit", train, "-o", qfile], [train, qfile])
    one_line_error(r, "is a file; give a folder")


def test_allocate_writes_its_output_whole(qfile: Path, tmp_path: Path) -> None:
    out = tmp_path / "budgets.jsonl"
    out.write_text("old content\n")
    r = invoke(["allocate", qfile, "--budget", "900", "-o", out, "--format", "json"], [qfile])
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["q0", "q1", "q2", "q3"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".budgets")]  # no temp left


# -- numbers at the boundary -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--budget", "99999999999999999999"], "out of range: give 1 to 1e+15 tokens"),
        (["--per-query", "1e308"], "out of range"),
        (["--budget", "900", "--alpha", "-1"], "alpha[0] = -1.0: must be positive"),
        (["--budget", "900", "--beta", "nan"], "beta[0] = nan"),
        (
            ["--budget", "900", "--min-tokens", "500", "--max-tokens", "100"],
            "min_tokens 500 exceeds max_tokens 100",
        ),
    ],
)
def test_allocate_numbers(qfile: Path, args: list[str], fragment: str) -> None:
    one_line_error(invoke(["allocate", qfile, *args], [qfile]), fragment)


def test_a_floor_beyond_the_budget_names_the_budget(tmp_path: Path) -> None:
    q = write(tmp_path / "q.jsonl", [{"id": "a", "tau": 10, "floor": 1e19}])
    one_line_error(invoke(["allocate", q, "--budget", "100"], [q]), 'field "floor" must be')
    q = write(tmp_path / "q2.jsonl", [{"id": "a", "tau": 10, "floor": 500}])
    one_line_error(
        invoke(["allocate", q, "--budget", "100"], [q]), "floor 500 exceeds the budget 100"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--temperature", "nan"], "temperature must be a finite number >= 0"),
        (["--timeout", "nan"], "timeout must be a positive, finite number"),
        (["--timeout", "0"], "timeout must be a positive"),
        (["--timeout", "-1"], "timeout must be a positive"),
        (["--grader", "foo"], "unknown grader 'foo'"),
        (["--grader", "nosuchmodule:x"], "cannot be loaded"),
        (["--concurrency", "0"], "concurrency must be"),
    ],
)
def test_run_settings_fail_before_anything_is_sent(
    qfile: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    out = tmp_path / "r.jsonl"
    base = ["run", qfile, "--endpoint", "http://127.0.0.1:9", "--model", "m", "--budget", "500"]
    one_line_error(invoke([*base, "-o", out, *args], [qfile]), fragment)
    assert not out.exists()


def test_run_refuses_an_endpoint_that_is_not_a_url(qfile: Path, tmp_path: Path) -> None:
    r = invoke(
        [
            "run",
            qfile,
            "--endpoint",
            "not a url",
            "--model",
            "m",
            "--budget",
            "500",
            "-o",
            tmp_path / "r.jsonl",
        ],
        [qfile],
    )
    one_line_error(r, "is not an http(s) URL")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("stream:balanced:99999999999", "of memory and this machine has"),
        ("stream:nonesuch:10", "unknown stream"),
        ("stream:balanced", "a stream is stream:NAME:N"),
        ("bundled:nonesuch", "nonesuch"),
    ],
)
def test_evaluate_sources(spec: str, fragment: str) -> None:
    one_line_error(invoke(["evaluate", spec, "--per-query", "100"]), fragment)


def test_evaluate_on_a_directory_and_absurd_budgets(tmp_path: Path) -> None:
    one_line_error(invoke(["evaluate", tmp_path]), "is a directory")
    r = invoke(["evaluate", "bundled:qwen25-math-math100", "--per-query", "1e308"])
    one_line_error(r, "out of range")


# -- predictor commands read queries like allocate does ---------------------------------


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("q.jsonl", '{"question": "what?"}\n', 'line 1: field "id" is missing'),
        ("q.csv", "id,question\n,what?\n", 'line 2: field "id" is missing'),
        ("q.csv", "id,question\na,what?,extra\n", "line 2: row has 3 cells"),
        ("q.jsonl", '{"id": "a", "question": "x"}\n\n{"id": "b"}\n', 'line 3: field "question"'),
        ("q.jsonl", "\x00\xff garbage", "is not UTF-8 text"),
    ],
)
def test_predictor_predict_checks_its_input(
    tmp_path: Path, name: str, text: str, fragment: str
) -> None:
    f = tmp_path / name
    f.write_bytes(
        text.encode("utf-8", "surrogateescape") if "\xff" not in text else b"\x00\xff garbage"
    )
    one_line_error(invoke(["predictor", "predict", "default", f], [f]), fragment)


def test_predictor_fit_bad_inputs(tmp_path: Path) -> None:
    one = write(tmp_path / "one.jsonl", [{"question": "only one row", "target": 50}])
    r = invoke(["predictor", "fit", one, "-o", tmp_path / "m"], [one])
    one_line_error(r, "training texts, got 1")
    six = write(
        tmp_path / "six.jsonl", [{"question": f"text {i} here", "target": 10 + i} for i in range(6)]
    )
    r = invoke(["predictor", "fit", six, "--alpha", "nan", "-o", tmp_path / "m2"], [six])
    one_line_error(r, "alpha")


def test_utf8_bom_csv_is_read(tmp_path: Path) -> None:
    f = tmp_path / "q.csv"
    f.write_bytes("\ufeffid,tau\na,100\nb,300\n".encode())
    r = invoke(["allocate", f, "--budget", "400"], [f])
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["id"] for x in r.stdout.splitlines()] == ["a", "b"]


# -- text without thresholds --------------------------------------------------------------


def test_text_without_thresholds_uses_the_default_predictor_and_says_so(tmp_path: Path) -> None:
    q = write(tmp_path / "q.jsonl", [{"id": r["id"], "question": r["question"]} for r in QUERIES])
    r = invoke(["allocate", q, "--per-query", "300"], [q])
    assert r.exit_code == 0, r.output
    assert r.stderr.count("has questions but no thresholds") == 1 and "predictor fit" in r.stderr
    r = invoke(
        ["allocate", q, "--per-query", "300", "--policy", "uniform", "--format", "json"], [q]
    )
    assert r.exit_code == 0 and "default predictor" not in r.stderr
    assert {json.loads(x)["budget"] for x in r.stdout.splitlines()} == {300}


# -- servers that fail -----------------------------------------------------------------


class Refusing(BaseHTTPRequestHandler):
    mode = "500"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.mode == "hang":
            threading.Event().wait(3)
            return
        self.send_response(500)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


class Quiet(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture(params=["500", "hang", "closed"])
def broken(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "closed":
        yield "http://127.0.0.1:9"
        return
    handler = type("H", (Refusing,), {"mode": request.param})
    srv = Quiet(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_every_query_failing_is_exit_1_with_the_count(
    qfile: Path, tmp_path: Path, broken: str
) -> None:
    out = tmp_path / "r.jsonl"
    r = invoke(
        [
            "run",
            qfile,
            "--endpoint",
            broken,
            "--model",
            "m",
            "--budget",
            "2000",
            "--policy",
            "uniform",
            "--timeout",
            "0.3",
            "--retries",
            "0",
            "--no-progress",
            "-o",
            out,
        ],
        [qfile],
    )
    assert r.exit_code == 1, r.output
    assert "4 queries ended in error" in r.stderr
    summary = json.loads(out.with_name("r.summary.json").read_text())
    assert summary["errors"] == 4 and summary["within_budget"]


def test_collect_that_collected_nothing_is_exit_1(qfile: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    r = invoke(
        [
            "collect",
            qfile,
            "--endpoint",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--samples",
            "2",
            "--retries",
            "0",
            "--timeout",
            "0.5",
            "--no-progress",
            "-o",
            out,
        ],
        [qfile],
    )
    assert r.exit_code == 1 and "4 queries have fewer than 2 samples" in r.stderr


def test_collect_reads_an_input_without_a_final_newline_and_leaves_it(tmp_path: Path) -> None:
    q = write(tmp_path / "q.jsonl", QUERIES[:2], newline_at_end=False)
    out = tmp_path / "t.jsonl"
    r = invoke(
        [
            "collect",
            q,
            "--endpoint",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--samples",
            "1",
            "--retries",
            "0",
            "--timeout",
            "0.5",
            "--no-progress",
            "-o",
            out,
        ],
        [q],
    )
    assert r.exit_code == 1 and "2 queries" in r.stderr


def test_infeasible_allocation_is_not_success(tmp_path: Path) -> None:
    q = write(
        tmp_path / "q.jsonl",
        [{"id": "a", "tau": 1, "floor": 60}, {"id": "b", "tau": 1, "floor": 60}],
    )
    one_line_error(invoke(["allocate", q, "--budget", "100"], [q]), "floors")


@pytest.mark.parametrize(
    ("data", "suffix", "fragment"),
    [
        (
            b'{"id":"a","samples":[{"tokens":1e308,"correct":true}]}\n',
            ".jsonl",
            "samples[0].tokens must be at most 1e+15 tokens",
        ),
        (b"\xdc\xe5\x00 not text", ".jsonl", "not UTF-8 text"),
        (b"\xdc\xe5\x00 not gzip", ".jsonl.gz", "not a valid gzip file"),
    ],
)
def test_trace_files_with_absurd_counts_or_bytes(
    tmp_path: Path, data: bytes, suffix: str, fragment: str
) -> None:
    f = tmp_path / f"t{suffix}"
    f.write_bytes(data)
    one_line_error(invoke(["evaluate", f, "--per-query", "100"], [f]), fragment)


def test_run_reads_queries_from_stdin_once(qfile: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    r = runner.invoke(
        app,
        [
            "run",
            "-",
            "--endpoint",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--budget",
            "2000",
            "--policy",
            "uniform",
            "--retries",
            "0",
            "--timeout",
            "0.5",
            "--no-progress",
            "-o",
            str(out),
        ],
        input=qfile.read_text(),
    )
    assert r.exit_code == 1 and "4 queries ended in error" in r.stderr, r.output
    assert sorted(x["id"] for x in map(json.loads, out.read_text().splitlines())) == [
        "q0",
        "q1",
        "q2",
        "q3",
    ]


def test_every_option_of_every_command_has_help() -> None:
    from typer.main import get_command

    missing: list[str] = []

    def walk(cmd: Any, name: str) -> None:
        for sub, child in getattr(cmd, "commands", {}).items():
            walk(child, f"{name} {sub}".strip())
        for p in getattr(cmd, "params", []):
            if p.param_type_name == "option" and not getattr(p, "help", None):
                missing.append(f"{name} {p.opts[0]}")

    walk(get_command(app), "")
    assert not missing, missing
