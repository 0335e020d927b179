from pathlib import Path

import pytest

from nemo_spatial.fileio import atomic_write, atomic_write_text, staged_directory


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]  # no staging file left behind
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"


def test_staged_directory_appears_complete_or_not_at(tmp_path: Path) -> None:
    final = tmp_path / "export"
    with pytest.raises(RuntimeError), staged_directory(final) as staging:
        (staging / "a.txt").write_text("x")
        raise RuntimeError("interrupted")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with staged_directory(final) as staging:
        (staging / "a.txt").write_text("x")
    assert (final / "a.txt").read_text() == "x"
    with pytest.raises(FileExistsError), staged_directory(final):
        pass
