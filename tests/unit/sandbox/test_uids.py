from __future__ import annotations

from pathlib import Path

import pytest

from tidal.sandbox.uids import UidAllocator, UidRangeFull


def test_each_app_keeps_its_own_uid_across_restarts(tmp_path: Path) -> None:
    first = UidAllocator(tmp_path, 700_000, 3)
    assert first.uid_for("local/a") == 700_000
    assert first.uid_for("local/b") == 700_001
    again = UidAllocator(tmp_path, 700_000, 3)  # a restarted platform
    assert again.uid_for("local/b") == 700_001
    assert again.uid_for("local/c") == 700_002
    with pytest.raises(UidRangeFull, match="sandbox_uid_range"):
        again.uid_for("local/d")
