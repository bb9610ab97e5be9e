"""The data bundled in the package: facts of the real traces, problem-set sizes, licenses."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shadowprice.traces import list_bundled, load_problems, load_traces, read_traces, write_traces
from shadowprice.traces.bundled import PROBLEM_COLUMNS

TRACES = "qwen25-math-math100"
SIZES = {
    "math500": 500,
    "gsm8k": 1319,
    "gsm8k-train": 7473,
    "aime24": 30,
    "amc23": 40,
    "minerva": 272,
    "olympiadbench": 675,
}


@pytest.fixture(scope="module")
def qwen():  # type: ignore[no-untyped-def]
    return load_traces(TRACES)


def test_qwen_trace_facts(qwen) -> None:  # type: ignore[no-untyped-def]
    tok, cor = qwen.tokens(), qwen.correct()
    assert qwen.n == 100 and tok.shape == (100, 8)
    np.testing.assert_array_equal(qwen.n_samples(), np.full(100, 8))
    assert not np.isnan(tok).any()
    # Facts stated in ../shared/data/README.md, measured with the DeepSeek BPE tokenizer.
    assert np.median(tok) == 311
    assert round(float(np.percentile(tok, 90))) == 499
    assert tok.max() == 2771
    assert cor.mean() == pytest.approx(0.91)
    per_query = cor.sum(axis=1)
    assert (per_query == 8).sum() == 86
    assert (per_query == 0).sum() == 4
    cv = tok.std(axis=1) / tok.mean(axis=1)
    assert np.median(cv) == pytest.approx(0.08, abs=0.005)


def test_qwen_trace_fields(qwen) -> None:  # type: ignore[no-untyped-def]
    assert qwen.ids[0] == "math-0" and len(set(qwen.ids)) == 100
    rec = qwen.records[0]
    assert rec["answer"] == "420" and rec["question"].startswith("What is $10.0000198")
    assert set(rec["samples"][0]) == {"tokens", "correct", "pred", "pred_score"}
    assert isinstance(rec["samples"][0]["pred_score"], float)
    levels = qwen.meta("level")
    # 11/16/24/24/25 problems at MATH levels 1..5
    assert [levels.count(k) for k in range(1, 6)] == [11, 16, 24, 24, 25]
    assert set(qwen.meta("source")) == {"MATH"}
    assert all(isinstance(t, int) and t > 0 for t in qwen.meta("solution_tokens"))
    assert all(q for q in qwen.questions())
    # Compact: the response texts are not bundled.
    assert not any("code" in s or "response" in s for r in qwen.records for s in r["samples"])


@pytest.mark.parametrize("name", ["t.jsonl.gz", "t.parquet", "t.csv"])
def test_bundled_traces_round_trip(qwen, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    write_traces(qwen, tmp_path / name)
    assert read_traces(tmp_path / name).records == qwen.records


@pytest.mark.parametrize(("name", "size"), SIZES.items())
def test_problem_sets(name: str, size: int) -> None:
    df = load_problems(name)
    assert len(df) == size
    assert tuple(df.columns) == PROBLEM_COLUMNS
    assert df["id"].is_unique and df["id"].notna().all()
    assert df["question"].notna().all() and (df["question"].str.len() > 10).all()
    assert df["answer"].notna().all() and (df["answer"].str.len() > 0).all()
    assert df["source"].notna().all() and df["source"].nunique() == 1
    assert str(df["solution_tokens"].dtype) == "Int64" and str(df["level"].dtype) == "Int64"
    if name == "amc23":  # no reference solutions in that source
        assert df["solution_tokens"].isna().all()
    else:
        assert df["solution_tokens"].notna().all() and (df["solution_tokens"] > 0).all()
    if name == "math500":
        assert set(df["level"]) == {1, 2, 3, 4, 5} and df["subject"].notna().all()
    else:
        assert df["level"].isna().all()


def test_problem_answers_normalised() -> None:
    gsm = load_problems("gsm8k")
    assert gsm.loc[0, "answer"] == "18"
    assert not gsm["answer"].str.contains(",").any()
    assert pd.to_numeric(gsm["answer"], errors="coerce").notna().all()
    assert load_problems("amc23").loc[0, "answer"] == "27"
    assert load_problems("minerva").loc[0, "answer"] == "1.6"
    # Underscore spellings are accepted.
    assert len(load_problems("gsm8k_train")) == 7473
    with pytest.raises(KeyError, match="available"):
        load_problems("nope")
    with pytest.raises(KeyError, match="available"):
        load_traces("nope")


def test_list_bundled() -> None:
    names = list_bundled()
    assert set(names) == {TRACES, *SIZES}
    assert all(isinstance(d, str) and d and "\n" not in d for d in names.values())


def test_bundle_is_small_licensed_and_self_contained() -> None:
    data = Path(str(files("shadowprice") / "data"))
    total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    assert total < 6_000_000
    for lic in ("LICENSE.qwen25math", "LICENSE.dynasor", "LICENSE.gsm8k"):
        assert (data / "LICENSES" / lic).read_text().startswith("MIT License")
    readme = (data / "README.md").read_text()
    assert "a45202bd" in readme and "proxy" in readme
    # The package must never read the raw files at run time.
    src = Path(str(files("shadowprice.traces")))
    for py in src.glob("*.py"):
        assert "shared/data" not in py.read_text(), py
