"""Files holding patient data or state are readable by their owner only, whatever the umask, and written whole."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.private_files import owner_only_opener, private_dir, private_file, write_private


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the loosest umask: every mode below comes from the code, not the environment
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_write_private_writes_an_owner_only_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    target.write_text("old")
    os.chmod(target, 0o644)
    write_private(target, "line one\nline two\n")
    assert target.read_text(encoding="utf-8") == "line one\nline two\n"
    assert mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_write_private_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    target = tmp_path / "transcript.txt"
    target.symlink_to(outside)
    write_private(target, "the transcript")
    assert not target.is_symlink() and target.read_text() == "the transcript"
    assert outside.read_text() == "not yours"


def test_private_file_makes_an_owner_only_store_and_narrows_an_existing_one(tmp_path: Path) -> None:
    made = private_file(tmp_path / "new" / "state.sqlite")
    assert made.exists() and mode(made) == 0o600 and mode(made.parent) == 0o700
    loose = tmp_path / "loose.sqlite"
    loose.write_bytes(b"")
    os.chmod(loose, 0o644)
    assert mode(private_file(loose)) == 0o600
    with pytest.raises(IsADirectoryError):
        private_file(tmp_path)
    assert mode(tmp_path) != 0o600


def test_private_dir_makes_only_the_missing_directories_owner_only(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    created = private_dir(tmp_path / "a" / "b")
    assert created == [tmp_path / "a" / "b", tmp_path / "a"]
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    assert mode(tmp_path) == 0o755  # an existing directory is left as it was


def test_the_opener_makes_owner_only_files_and_refuses_a_symlink(tmp_path: Path) -> None:
    with open(tmp_path / "part", "wb", opener=owner_only_opener) as handle:
        handle.write(b"x")
    assert mode(tmp_path / "part") == 0o600
    (tmp_path / "link").symlink_to(tmp_path / "part")
    with pytest.raises(OSError), open(tmp_path / "link", "ab", opener=owner_only_opener):
        pass


def test_the_opener_narrows_a_file_it_writes_that_others_could_read(tmp_path: Path) -> None:
    """A `.part` left readable by others (an older version's, or copied in) is resumed in append mode: it becomes
    the recording. Before, the opener set 0600 only on a file it created, so the finished recording kept 0644."""
    part = tmp_path / "video.webm.part"
    part.write_bytes(b"first half")
    os.chmod(part, 0o644)
    with open(part, "ab", opener=owner_only_opener) as handle:
        handle.write(b", second half")
    assert mode(part) == 0o600
    shared = tmp_path / "read-only-use"
    shared.write_bytes(b"x")
    os.chmod(shared, 0o644)
    with open(shared, "rb", opener=owner_only_opener):
        pass
    assert mode(shared) == 0o644  # only what it writes


# --- every owner-only file of the product is made here (tests/test_layout.py checks no other module sets modes) ---


def test_the_rate_store_is_an_owner_only_file_in_owner_only_folders(tmp_path: Path) -> None:
    from tools.ratestore import SqliteRateStore

    store = SqliteRateStore(tmp_path / "state" / "deep" / "checkpoints.ratelimit.sqlite")
    store.close()
    assert mode(tmp_path / "state") == 0o700 and mode(tmp_path / "state" / "deep") == 0o700
    assert mode(tmp_path / "state" / "deep" / "checkpoints.ratelimit.sqlite") == 0o600
    loose = tmp_path / "loose.ratelimit.sqlite"
    loose.write_bytes(b"")
    os.chmod(loose, 0o644)  # made by hand, or by another tool: narrowed like the checkpoint DB
    SqliteRateStore(loose).close()
    assert mode(loose) == 0o600


def test_a_thread_lock_file_is_owner_only_and_never_opened_through_a_symlink(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from agent.threadlock import _FileLock

    lock = _FileLock(tmp_path / "locks" / "sub" / "audit.lock")
    assert lock.try_acquire(datetime(2026, 12, 7, tzinfo=UTC)) is None
    assert mode(tmp_path / "locks" / "sub" / "audit.lock") == 0o600
    lock.release()
    assert mode(tmp_path / "locks") == 0o700 and mode(tmp_path / "locks" / "sub") == 0o700
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "locks" / "linked.lock").symlink_to(target)
    with pytest.raises(OSError):
        _FileLock(tmp_path / "locks" / "linked.lock").try_acquire(datetime(2026, 12, 7, tzinfo=UTC))


def test_a_fleet_summary_goes_into_owner_only_folders(tmp_path: Path) -> None:
    from agent.fleet import write_fleet_summary

    paths = write_fleet_summary([], tmp_path / "reports" / "fleet")
    assert mode(tmp_path / "reports") == 0o700 and mode(tmp_path / "reports" / "fleet") == 0o700
    assert all(mode(path) == 0o600 for path in paths.values())


def test_a_device_or_pipe_named_as_a_private_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """A state or output path naming a device or a pipe (e.g. /dev/null) is never chmod'ed: as root that would
    change the machine's /dev/null for every program."""
    import errno

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe, 0o644)
    with pytest.raises(OSError) as refused:
        private_file(pipe)
    assert refused.value.errno == errno.EINVAL and "regular file" in str(refused.value)
    with pytest.raises(OSError, match="regular file"):
        os.close(owner_only_opener(str(pipe), os.O_RDWR))
    assert stat.S_IMODE(pipe.stat().st_mode) == 0o644
