"""Python client for researchers and operators; the `scifed` CLI is built on it.

An identity directory (made by `scifed researcher init` / `scifed operator init`) holds
`client.yaml` (name, role, coordinator address), the private key `<role>.key`, the
certificate `<name>.crt` issued by the federation CA, and `ca.crt`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from protos.scifed.v1 import coordinator_pb2 as pb
from protos.scifed.v1 import coordinator_pb2_grpc as pbg
from scifed.config import load_config
from scifed.errors import UserError
from scifed.tls import TlsFiles, secure_channel


class ClientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: str
    coordinator: str


@dataclass(frozen=True)
class IdentityDir:
    path: Path
    cfg: ClientConfig

    @classmethod
    def load(cls, path: Path) -> IdentityDir:
        path = Path(path)
        if not (path / "client.yaml").exists():
            raise UserError(f"{path} is not an identity directory (no client.yaml); make one "
                            "with `scifed researcher init` or `scifed operator init`")
        return cls(path, load_config(path / "client.yaml", ClientConfig))

    def tls(self) -> TlsFiles:
        files = TlsFiles(self.path / "ca.crt", self.path / f"{self.cfg.name}.crt",
                         self.path / f"{self.cfg.role}.key")
        for f in (files.ca, files.cert):
            if not f.exists():
                raise UserError(f"{f} is missing: the operator signs your CSR with "
                                f"`scifed ca sign` and gives you it and ca.crt")
        return files


class Client:
    """One researcher's or operator's connection to the coordinator."""

    def __init__(self, identity: Path, coordinator: str | None = None,
                 timeout: float = 30) -> None:
        self.identity = IdentityDir.load(identity)
        self.address = coordinator or self.identity.cfg.coordinator
        self.timeout = timeout
        self._channel = secure_channel(self.address, self.identity.tls())
        self.stub = pbg.CoordinatorApiStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def whoami(self) -> dict:
        r = self.stub.WhoAmI(pb.WhoAmIRequest(), timeout=self.timeout)
        return {"name": r.name, "role": r.role}

    def search(self, query: str = "", *, subjects=(), platforms=(), grades=(), categories=(),
               keywords=(), columns=(), limit: int = 50) -> pd.DataFrame:
        """Search the federated catalog; one row per dataset."""
        r = self.stub.SearchCatalog(pb.SearchRequest(
            query=query, subjects=subjects, platforms=platforms, grades=grades,
            categories=categories, keywords=keywords, columns=columns, limit=limit),
            timeout=self.timeout)
        return pd.DataFrame(
            [{"id": h.record_id, "title": h.title, "node": h.node, "platform": h.platform,
              "grade": h.grade, "category": h.category, "subjects": list(h.subjects),
              "rows": h.record_count if not h.stub else None, "stub": h.stub}
             for h in r.hits],
            columns=["id", "title", "node", "platform", "grade", "category", "subjects",
                     "rows", "stub"])

    def record(self, record_id: str) -> dict:
        r = self.stub.GetRecord(pb.GetRecordRequest(record_id=record_id), timeout=self.timeout)
        return json.loads(r.record_json)

    def nodes(self) -> pd.DataFrame:
        r = self.stub.ListNodes(pb.ListNodesRequest(), timeout=self.timeout)
        return pd.DataFrame(
            [{"name": n.name, "platform": n.platform, "online": n.online,
              "last_seen": pd.to_datetime(n.last_seen_unix_ms, unit="ms", utc=True)
              if n.last_seen_unix_ms else None,
              "datasets": n.datasets, "version": n.software_version} for n in r.nodes],
            columns=["name", "platform", "online", "last_seen", "datasets", "version"])
