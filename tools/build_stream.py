"""Build the bundled synthetic stream(s) in ``src/shadowprice/data/streams``.

Deterministic: the same (stream, n, seed) from :data:`shadowprice.evaluate.streams.BUNDLED_STREAMS`
always gives byte-identical gzip output (no name or mtime in the gzip header). Run after
changing the pool constants:  .venv/bin/python tools/build_stream.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shadowprice.evaluate.streams import BUNDLED_STREAMS, make_stream

OUT = Path(__file__).resolve().parents[1] / "src" / "shadowprice" / "data" / "streams"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for stem, (name, n, seed) in BUNDLED_STREAMS.items():
        stream = make_stream(name, n, seed)
        path = OUT / f"{stem}.jsonl.gz"
        stream.write_jsonl_gz(path)
        pools, counts = np.unique(stream.pool, return_counts=True)
        mix = ", ".join(f"{p} {c}" for p, c in zip(pools, counts, strict=True))
        print(f"wrote {path} ({n} queries: {mix}; mean p {stream.truth.p.mean():.3f})")


if __name__ == "__main__":
    main()
