"""The write-ahead journal: what a crash leaves behind is counted, configs are not mixed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from shadowprice.ledger import JournalLedger, JournalMismatch, LedgerError

CONFIG = {"policy": "clear", "model": "m", "budget": 1000}


def test_unsettled_reservations_count_as_spent_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"

    async def crash() -> None:
        led = JournalLedger(path, 1000, config=CONFIG)
        done = await led.reserve(300, tag="a")
        await led.reserve(200, tag="b")  # in flight when the process dies
        assert done is not None
        await led.settle(done, 120)
        # no aclose: the process was killed

    asyncio.run(crash())
    led = JournalLedger(path, 1000, config=CONFIG)
    r = led.recovery
    assert (r.settled, r.unsettled, r.unsettled_tokens, r.counted) == (120, 1, 200, 200)
    assert led.state_now().spent == 320 and led.state_now().available == 680
    # A second resume does not count the same reservation twice.
    again = JournalLedger(path, 1000, config=CONFIG)
    assert again.recovery.spent == 320 and again.recovery.unsettled == 0


def test_release_unsettled_gives_them_back(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"

    async def crash() -> None:
        led = JournalLedger(path, 1000, config=CONFIG)
        await led.reserve(400, tag="x")

    asyncio.run(crash())
    led = JournalLedger(path, 1000, config=CONFIG, release_unsettled=True)
    assert led.recovery.counted == 0 and led.state_now().available == 1000


def test_reservation_is_on_disk_before_reserve_returns(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"

    async def go() -> None:
        led = JournalLedger(path, 50, config=CONFIG)
        await led.reserve(30, tag="q1")
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert lines[0]["event"] == "run" and lines[0]["config"] == CONFIG
        assert lines[-1] == {"event": "reserve", "id": lines[-1]["id"], "tokens": 30, "tag": "q1"}

    asyncio.run(go())


def test_another_configuration_is_refused_naming_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    JournalLedger(path, 1000, config=CONFIG)
    with pytest.raises(JournalMismatch) as err:
        JournalLedger(path, 1000, config={**CONFIG, "policy": "uniform"})
    assert err.value.differences == {"policy": ("clear", "uniform")}
    assert "policy" in str(err.value)


def test_torn_last_line_is_cut_and_damaged_journals_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    JournalLedger(path, 1000, config=CONFIG)
    with path.open("a") as fh:
        fh.write('{"event": "reserve", "id": "abc", "tok')  # died mid-write
    led = JournalLedger(path, 1000, config=CONFIG)
    assert led.recovery.unsettled == 0 and led.state_now().spent == 0
    path.write_text("hello\n")
    with pytest.raises(LedgerError, match="not a journal line"):
        JournalLedger(path, 1000, config=CONFIG)
