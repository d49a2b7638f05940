"""The state file: atomic writes, round trips, and a corrupt file that does not stop the daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from healthd import statefile
from healthd.model import Protocol, VirtualServerKey
from healthd.overrides import Override, OverrideKind


def test_round_trip_and_mode(tmp_path: Path) -> None:
    path = str(tmp_path / "lib" / "state.json")
    state = statefile.SavedState(
        {("web", "a"): Override(OverrideKind.DRAIN, "root", "deploy", 1.0, 2.0)},
        [VirtualServerKey.for_address(Protocol.UDP, "fd00::1", 53), VirtualServerKey.for_fwmark(3)],
    )
    statefile.save(path, state)
    assert statefile.load(path) == state
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "lib").iterdir()] == ["state.json"]  # no temp left


def test_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    assert statefile.load(str(tmp_path / "none.json")) == statefile.SavedState()


@pytest.mark.parametrize(
    "content", ["{not json", '{"version": 99}', '{"version": 1, "overrides": [{}]}']
)
def test_unreadable_file_is_logged_and_ignored(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    assert statefile.load(str(path)) == statefile.SavedState()
    assert "unreadable" in caplog.text


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "state.json")
    old = statefile.SavedState({("web", "a"): Override(OverrideKind.MAINT, "root")})
    statefile.save(path, old)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        statefile.save(path, statefile.SavedState())
    monkeypatch.undo()
    assert statefile.load(path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
