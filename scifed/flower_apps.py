"""Flower App Bundles (FABs) as both sides see them: the coordinator builds the FAB of a
job type's app to start a run, and a node builds the same FAB from its own installed
scifed to know which app it may run.

Flower's build is deterministic (a zip of the app directory with fixed timestamps), so
the sha256 of a FAB built from the same scifed is the same on every host: a node
compares the sha256 of the bytes the SuperLink sent with the FABs of its own job types
(and the hashes its officer approved) and runs nothing else.
"""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from scifed.errors import UserError

if TYPE_CHECKING:
    from flwr.supercore.fab import Fab


def build_fab(app_dir: Path) -> Fab:
    """An app directory as a FAB. Flower is imported here, when a FAB is first built
    or checked: it costs every node ~60 MB and ~0.3 s of start-up (its CLI pulls in
    FastAPI), and a node that never trains never needs it."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.supercore.fab import Fab

    content = build_fab_from_disk(Path(app_dir))
    return Fab(fab_sha256(content), content, {})


def fab_sha256(content: bytes) -> str:
    """The FAB's hash, computed from its bytes (never the hash a sender claims)."""
    return hashlib.sha256(content).hexdigest()


def fab_files(content: bytes) -> list[str]:
    """The files a FAB carries."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            return sorted(z.namelist())
    except zipfile.BadZipFile:
        raise UserError("the app bundle is not a zip archive") from None


def client_app_ref(content: bytes) -> str:
    """The ClientApp a FAB's pyproject.toml names (``module:attribute``)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            project = tomllib.loads(z.read("pyproject.toml").decode())
        return str(project["tool"]["flwr"]["app"]["components"]["clientapp"])
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise UserError("the app bundle names no ClientApp in its pyproject.toml") from None
