"""scifed.at_rest: private directories and files whatever the umask, the start-up check
of state modes, and secrets encrypted under a key derived from the host's private key."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from coordinator.db import Database
from node.store import NodeStore
from scifed.at_rest import (
    AtRestKey,
    private_dir,
    private_sqlite,
    secure_state,
    write_private,
)
from scifed.errors import UserError


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask0():
    """The loosest umask: what is private must be so by its own chmod."""
    old = os.umask(0)
    yield
    os.umask(old)


def write_key(path: Path, key, fmt=serialization.PrivateFormat.PKCS8) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt,
                                       serialization.NoEncryption()))
    return path


def at_rest_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "scifed.at_rest"]


# -- creating private state ---------------------------------------------------------------

def test_private_dir_and_file_ignore_the_umask(tmp_path, umask0):
    d = private_dir(tmp_path / "a" / "state")
    assert mode(d) == 0o700
    write_private(d / "x.key", b"secret")
    assert mode(d / "x.key") == 0o600
    with pytest.raises(FileExistsError):  # never replaces a key
        write_private(d / "x.key", b"other")
    assert (d / "x.key").read_bytes() == b"secret"


def test_private_dir_leaves_an_existing_directory_to_the_check(tmp_path):
    os.chmod(tmp_path, 0o755)
    assert mode(private_dir(tmp_path)) == 0o755
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="not a directory"):
        private_dir(tmp_path / "f")


def test_sqlite_database_and_its_wal_are_0600(tmp_path, umask0):
    db = private_sqlite(tmp_path / "n.db")
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    parts = [db, tmp_path / "n.db-wal", tmp_path / "n.db-shm"]
    assert all(p.exists() for p in parts)
    assert [mode(p) for p in parts] == [0o600] * 3
    con.close()


def test_node_store_and_coordinator_database_are_private(tmp_path, umask0):
    store = NodeStore(tmp_path / "node" / "node.db")
    assert mode(tmp_path / "node") == 0o700
    assert mode(store.path) == 0o600
    database = Database(f"sqlite:///{tmp_path / 'coordinator.db'}")
    try:
        with database.engine.connect():
            parts = [tmp_path / "coordinator.db", tmp_path / "coordinator.db-wal",
                     tmp_path / "coordinator.db-shm"]
            assert [mode(p) for p in parts] == [0o600] * 3
    finally:
        database.close()


def test_private_sqlite_narrows_what_an_older_version_left(tmp_path, caplog):
    db = tmp_path / "n.db"
    for part in (db, tmp_path / "n.db-wal"):
        part.write_bytes(b"")
        os.chmod(part, 0o644)
    with caplog.at_level(logging.WARNING):
        private_sqlite(db)
    assert mode(db) == mode(tmp_path / "n.db-wal") == 0o600
    assert len(at_rest_warnings(caplog)) == 2


# -- the start-up check -------------------------------------------------------------------

def test_secure_state_narrows_each_open_path_once_with_a_warning(tmp_path, caplog):
    state = tmp_path / "state"
    (state / "flower").mkdir(parents=True)
    os.chmod(state, 0o755)
    files = {name: state / name for name in
             ("node.db", "node.db-wal", "node.db-shm", "x.key")}
    files["deep.db"] = state / "flower" / "deep.db"
    for path in files.values():
        path.write_bytes(b"")
        os.chmod(path, 0o644)
    (state / "notes.log").write_text("")
    os.chmod(state / "notes.log", 0o644)
    tls_key = tmp_path / "pki" / "node.key"
    tls_key.parent.mkdir()
    tls_key.write_bytes(b"")
    os.chmod(tls_key, 0o640)
    outside = tmp_path / "outside.db"
    outside.write_bytes(b"")
    os.chmod(outside, 0o644)
    (state / "link.db").symlink_to(outside)

    with caplog.at_level(logging.WARNING):
        fixed = secure_state(state, keys=[tls_key, tmp_path / "pki" / "missing.key"])
    assert set(fixed) == {state, tls_key, *files.values()}
    assert len(at_rest_warnings(caplog)) == len(fixed)
    assert mode(state) == 0o700
    assert all(mode(p) == 0o600 for p in files.values())
    assert mode(tls_key) == 0o600
    assert mode(state / "notes.log") == 0o644  # not a database or key (and behind 0700)
    assert mode(outside) == 0o644  # a link is not followed
    assert mode(state / "flower") == 0o755  # behind the 0700 state directory

    caplog.clear()
    assert secure_state(state, keys=[tls_key]) == []
    assert at_rest_warnings(caplog) == []


def test_secure_state_creates_a_missing_state_directory_private(tmp_path, umask0):
    assert secure_state(tmp_path / "new" / "state") == []
    assert mode(tmp_path / "new" / "state") == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_secure_state_refuses_state_owned_by_another_account(tmp_path):
    state = private_dir(tmp_path / "state")
    db = state / "node.db"
    db.write_bytes(b"")
    os.chmod(db, 0o600)
    os.chown(db, 65534, 65534)
    with pytest.raises(UserError, match=r"belongs to uid 65534.*chown 0 .*node\.db"):
        secure_state(state)


def test_secure_state_refuses_what_it_cannot_narrow(tmp_path, monkeypatch):
    state = private_dir(tmp_path / "state")
    db = state / "node.db"
    db.write_bytes(b"")
    os.chmod(db, 0o644)

    def refuse(path, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    with pytest.raises(UserError, match=r"mode 0644.*cannot narrow it \(Operation not "
                                        r"permitted\): run `chmod 600 .*node\.db`"):
        secure_state(state)


# -- secrets encrypted at rest ------------------------------------------------------------

def test_at_rest_key_round_trip_and_what_it_refuses(tmp_path):
    key_file = write_key(tmp_path / "node.key", ec.generate_private_key(ec.SECP256R1()))
    vault = AtRestKey.from_private_key_file(key_file, "study keys")
    blob = vault.encrypt(b"the secret", b"study-1|1")
    assert vault.is_encrypted(blob) and b"the secret" not in blob
    assert vault.decrypt(blob, b"study-1|1") == b"the secret"
    assert vault.encrypt(b"the secret", b"study-1|1") != blob  # a fresh nonce each time

    with pytest.raises(UserError, match="cannot decrypt"):
        vault.decrypt(blob, b"study-1|2")  # moved to another version
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(UserError, match="cannot decrypt"):
        vault.decrypt(bytes(tampered), b"study-1|1")
    with pytest.raises(UserError, match="not a blob encrypted at rest"):
        vault.decrypt(b"SFHK plaintext", b"study-1|1")
    other = write_key(tmp_path / "other.key", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(UserError, match="cannot decrypt"):
        AtRestKey.from_private_key_file(other, "study keys").decrypt(blob, b"study-1|1")
    with pytest.raises(UserError, match="cannot decrypt"):
        AtRestKey.from_private_key_file(key_file, "other purpose").decrypt(blob, b"study-1|1")


def test_at_rest_key_depends_on_the_key_not_its_file_encoding(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = write_key(tmp_path / "a.key", key)
    traditional = write_key(tmp_path / "b.key", key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert pkcs8.read_bytes() != traditional.read_bytes()
    blob = AtRestKey.from_private_key_file(pkcs8, "p").encrypt(b"s", b"a")
    assert AtRestKey.from_private_key_file(traditional, "p").decrypt(blob, b"a") == b"s"

    edwards = write_key(tmp_path / "e.key", ed25519.Ed25519PrivateKey.generate())
    vault = AtRestKey.from_private_key_file(edwards, "p")
    assert vault.decrypt(vault.encrypt(b"s", b"a"), b"a") == b"s"


def test_at_rest_key_file_problems_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read this host's private key"):
        AtRestKey.from_private_key_file(tmp_path / "none.key", "p")
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(UserError, match="not an unencrypted PEM private key"):
        AtRestKey.from_private_key_file(tmp_path / "bad.key", "p")


def test_node_store_keeps_study_keys_encrypted_and_migrates_clear_ones(tmp_path):
    vault = AtRestKey.from_private_key_file(
        write_key(tmp_path / "node.key", ec.generate_private_key(ec.SECP256R1())), "p")
    store = NodeStore(tmp_path / "state" / "node.db")
    secret = b"SFHK" + os.urandom(4000)
    store.put_study_key("st-1", 1, secret, vault)
    assert store.study_key("st-1", 1, vault) == secret
    assert store.study_key("st-1", 2, vault) is None
    assert store.encrypt_clear_study_keys(vault) == []  # nothing to migrate

    con = sqlite3.connect(store.path)  # what an older version wrote
    with con:
        con.execute("INSERT INTO study_keys VALUES ('st-1', 2, ?)", (secret,))
    con.close()
    with pytest.raises(UserError, match="stored in clear.*restart the node"):
        store.study_key("st-1", 2, vault)
    assert store.encrypt_clear_study_keys(vault) == [("st-1", 2)]
    assert store.study_key("st-1", 2, vault) == secret
    for part in store.path.parent.iterdir():
        assert secret[100:164] not in part.read_bytes(), part.name
