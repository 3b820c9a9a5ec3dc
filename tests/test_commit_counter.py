"""commit_counter.py: the counter's file is private to its owner from the start, and so is
the directory made for it (the SQLite database is created beside it the same way)."""
import os
import stat

from userservice.commit_counter import CommitCounter


def test_commit_counter_creates_its_directory_and_file_for_the_owner_only(tmp_path):
    path = tmp_path / "new" / "userservice.db-commits"
    previous = os.umask(0o022)  # the usual umask, which would leave both readable by all
    try:
        counter = CommitCounter(str(path))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.path.getsize(path) == 8  # room for the one counter
    counter.close()
