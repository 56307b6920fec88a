"""Secrets at rest: private state directories and files, the start-up check of their
modes, and encryption of stored secrets under a key derived from the host's own key.

A state directory is 0700 and its databases and key files 0600, whatever the umask:
each is created private (mode set with chmod after creation, which the umask does not
touch) and :func:`secure_state` checks them at every start, narrowing what an older
version or a careless copy left open (one warning each) and refusing to start when it
cannot. Narrowing the group bits also masks any POSIX ACL entries on the file.

File modes protect against the host's other accounts; they do nothing for a copy of
the database (a backup, a disk image). Secrets that the database holds, such as a
node's copies of study keys, are therefore stored encrypted with :class:`AtRestKey`:
AES-256-GCM under a key derived (HKDF-SHA256) from the host's own private key, the
key file its TLS identity already protects, with what the secret is for as associated
data, so a copy of the database alone opens nothing, and a row moved to another
study, version or node does not open either.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scifed.errors import UserError

log = logging.getLogger("scifed.at_rest")

DIR_MODE = 0o700
FILE_MODE = 0o600
PRIVATE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".key")
"""Files under a state directory that :func:`secure_state` keeps 0600: SQLite databases
with their write-ahead log, shared-memory index and rollback journal, and key files."""
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

_OPEN_BITS = 0o077  # anything for group or others


def private_dir(path: Path) -> Path:
    """Create directory ``path`` 0700 (missing parents as the umask makes them). An
    existing directory is left as it is: :func:`secure_state` checks it at start."""
    path = Path(path)
    try:
        path.mkdir(parents=True, mode=DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise UserError(f"{path} exists and is not a directory") from None
    else:
        os.chmod(path, DIR_MODE)  # mkdir's mode passes through the umask
    return path


def write_private(path: Path, data: bytes) -> None:
    """Create file ``path`` 0600 from the start and write ``data`` (O_EXCL: never
    replace a file, never widen one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), FILE_MODE)
        f.write(data)


def replace_private(path: Path, data: bytes) -> None:
    """Replace file ``path`` atomically with a new 0600 one holding ``data`` (readers
    see the old bytes or the new, never part of them)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_private(tmp, data)
    os.replace(tmp, path)


def private_sqlite(path: Path) -> Path:
    """Make SQLite database ``path`` private before SQLite opens it: an empty 0600 file
    if there is none (SQLite then creates its -wal and -shm with the same mode), or the
    existing file and its companions narrowed to 0600 (a warning for each)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
    for part in (path, *(path.with_name(path.name + s) for s in SQLITE_COMPANIONS)):
        if part.exists():
            _narrow(part, is_dir=False)
    return path


def secure_state(state_dir: Path, *, keys: Iterable[Path] = ()) -> list[Path]:
    """The start-up check: ``state_dir`` (created if missing) is 0700 and every
    database or key file under it (see :data:`PRIVATE_SUFFIXES`), and each of ``keys``
    that exists, is 0600, all owned by this process's account.

    What is open to group or others is narrowed, with one warning per path; a path
    that belongs to another account, or whose mode this account cannot change, is one
    UserError naming it and the command that fixes it. Returns the paths narrowed."""
    state_dir = private_dir(state_dir)
    fixed: list[Path] = []
    if _narrow(state_dir, is_dir=True):
        fixed.append(state_dir)
    for here, _dirs, files in os.walk(state_dir):  # never follows symbolic links
        for name in files:
            if name.endswith(PRIVATE_SUFFIXES):
                path = Path(here) / name
                if _narrow(path, is_dir=False):
                    fixed.append(path)
    for key in keys:
        key = Path(key)
        if key.exists() and _narrow(key, is_dir=False):  # a missing one: its loader says
            fixed.append(key)
    return fixed


def _narrow(path: Path, *, is_dir: bool) -> bool:
    """Take group and other bits off ``path``; True if there were any."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False  # a SQLite -wal/-shm that its last connection just removed
    if stat.S_ISLNK(st.st_mode):
        return False  # the walk never follows links, and neither does the check
    mode = stat.S_IMODE(st.st_mode)
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UserError(f"{path} belongs to uid {st.st_uid}, but scifed runs as uid {uid}, "
                        f"so that account can read it: `chown {'-R ' if is_dir else ''}"
                        f"{uid} {path}` (or run scifed as its owner)")
    if not mode & _OPEN_BITS:
        return False
    wanted = mode & (0o700 if is_dir else 0o600)
    try:
        os.chmod(path, wanted)
    except OSError as exc:
        raise UserError(f"{path} is mode {mode:04o}, open to other accounts on this host, "
                        f"and scifed cannot narrow it ({exc.strerror}): run "
                        f"`chmod {wanted:o} {path}` as its owner") from None
    log.warning("%s %s was open to %s (mode %04o); set to %04o", "directory" if is_dir
                else "file", path, _who(mode), mode, wanted)
    return True


def _who(mode: int) -> str:
    parts = [who for who, bits in (("group", 0o070), ("others", 0o007)) if mode & bits]
    return " and ".join(parts)


# -- secrets encrypted under the host's own key ------------------------------------------

AT_REST_MAGIC = b"SFAR\x01"
"""Leads every blob :meth:`AtRestKey.encrypt` writes (format version 1)."""
_NONCE_BYTES = 12
_INFO = b"scifed-at-rest-v1|"


class AtRestKey:
    """AES-256-GCM for secrets this host keeps in its own database, under a key derived
    (HKDF-SHA256) from the host's private key and a purpose label. A blob is
    ``AT_REST_MAGIC || nonce(12) || ciphertext || tag(16)``; the caller's associated
    data (what the secret is) must match to open it."""

    def __init__(self, key: bytes, source: str = "a derived key") -> None:
        self._aead = AESGCM(key)
        self.source = source

    @classmethod
    def from_private_key_file(cls, path: Path, purpose: str) -> AtRestKey:
        return cls(derive_private(path, purpose), source=str(path))

    @staticmethod
    def is_encrypted(blob: bytes) -> bool:
        return bytes(blob[:len(AT_REST_MAGIC)]) == AT_REST_MAGIC

    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return AT_REST_MAGIC + nonce + self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        """The plaintext; a UserError if ``blob`` is not ours, or was made under another
        key or for other associated data, or was altered."""
        blob = bytes(blob)
        if not self.is_encrypted(blob):
            raise UserError("not a blob encrypted at rest by scifed")
        start = len(AT_REST_MAGIC)
        nonce, sealed = blob[start:start + _NONCE_BYTES], blob[start + _NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, sealed, associated)
        except InvalidTag:
            raise UserError(f"cannot decrypt a stored secret with the key derived from "
                            f"{self.source}: the key was replaced, or the stored copy "
                            "was altered or belongs elsewhere") from None


def derive_private(path: Path, purpose: str) -> bytes:
    """32 bytes only this host can make: HKDF-SHA256 of its private key (``path``, PEM)
    for ``purpose``, the same across restarts."""
    path = Path(path)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read this host's private key "
                        f"({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (TypeError, ValueError):
        raise UserError(f"{path}: not an unencrypted PEM private key") from None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_INFO + purpose.encode()).derive(_key_material(key))


_RAW_KINDS = ((ed25519.Ed25519PrivateKey, b"ed25519"), (ed448.Ed448PrivateKey, b"ed448"),
              (x25519.X25519PrivateKey, b"x25519"), (x448.X448PrivateKey, b"x448"))


def _key_material(key) -> bytes:
    """The private key's secret as canonical bytes: an EC key's scalar (fixed width)
    with its curve, an Edwards or Montgomery key's raw bytes, else PKCS#8 DER. Canonical
    rather than the file's encoding, so a re-encoded key file (or a library that
    serialises optional fields differently) derives the same key."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        width = (key.curve.key_size + 7) // 8
        scalar = key.private_numbers().private_value.to_bytes(width, "big")
        return b"ec|" + key.curve.name.encode() + b"|" + scalar
    for kind, label in _RAW_KINDS:
        if isinstance(key, kind):
            raw = key.private_bytes(serialization.Encoding.Raw,
                                    serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
            return label + b"|" + raw
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
