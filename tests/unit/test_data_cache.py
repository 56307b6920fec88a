"""node/data.py keeps each file parsed once per version: a task reads what the file holds
now, whether it was rewritten, replaced or registered anew, and a parsed copy gives the
same table (types, file order) as the file itself."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from node import data as node_data
from node.data import DataFile
from scifed.errors import UserError


def _sum(path, version: str = "") -> float:
    with DataFile(path, version=version) as data:
        return data.query([data.number("x")], "SELECT sum(c0) FROM d")[0][0]


def test_a_changed_file_is_read_afresh(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x\n1\n2\n")
    assert _sum(path) == 3
    path.write_text("x\n1\n2\n30\n")  # grows
    assert _sum(path) == 33
    stat = path.stat()
    path.write_text("x\n1\n2\n40\n")  # same size, the clock moved on
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert _sum(path) == 43
    replacement = tmp_path / "new.csv"
    replacement.write_text("x\n5\n")
    os.replace(replacement, path)  # another inode
    assert _sum(path) == 5


def test_a_new_registration_is_read_afresh(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x\n1\n2\n")
    stat = path.stat()
    assert _sum(path, "sha-a") == 3
    path.write_text("x\n1\n7\n")  # same size and, restored, the same times
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _sum(path, "sha-b") == 8  # registered anew: its sha256 is part of the key


def test_the_parsed_copy_is_the_file(tmp_path, penguins):
    path = tmp_path / "penguins.csv"
    penguins.to_csv(path, index=False)
    with DataFile(path) as first, DataFile(path) as second:  # the second from memory
        assert first.types == second.types
        pd.testing.assert_frame_equal(first.frame(), second.frame())
        assert second.masks([("island = ?", ["Dream"])])[:, 0].tolist() == \
            (penguins.island == "Dream").tolist()  # rows in file order


def _kept(path) -> bool:
    return any(key[0] == str(path.absolute()) for key in node_data._LOADED._entries)


def test_files_past_the_budget_are_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(node_data._LOADED, "budget", 12)
    small, other, large = (tmp_path / n for n in ("small.csv", "other.csv", "large.csv"))
    small.write_text("x\n1\n2\n")  # 6 bytes each
    other.write_text("x\n3\n4\n")
    large.write_text("x\n1\n2\n3\n4\n5\n6\n")  # 14 bytes
    assert (_sum(small), _sum(other)) == (3, 7)
    assert _kept(small) and _kept(other)
    assert _sum(large) == 21 and not _kept(large)  # larger than the budget: read each time
    _sum(small)
    third = tmp_path / "third.csv"
    third.write_text("x\n5\n6\n")
    assert _sum(third) == 11
    assert _kept(small) and _kept(third) and not _kept(other)  # least recently used out


def test_a_bad_file_is_one_error_and_is_not_kept(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n1,2\n3\n")
    with pytest.raises(UserError, match=r"^d\.csv: ") as exc:
        DataFile(path)
    assert len(str(exc.value).splitlines()) == 1
    path.write_text("x,y\n1,2\n3,4\n")
    assert _sum(path) == 4
