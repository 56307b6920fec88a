"""The Flower side of a :class:`scifed.localfed.LocalFederation`, as a deployment runs it:
the coordinator's SuperLink (its TLS files, its state directory), one SuperNode per node
with its P-384 key registered, each pointed at its node's local API. Used by the
integration tests and the training benchmark, so both exercise the deployed code paths.

A job directory is prepared from the coordinator's own database (study, key version,
public context); a release runs the `train.release` task on the release node's own state.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from coordinator.db import Database
from coordinator.flower import SuperLink
from coordinator.studies import get_study, get_study_public_context
from coordinator.training import prepare_job_dir, release_request
from node.datasets import DatasetRegistry
from node.flower import SuperNode
from node.link import CoordinatorLink
from node.local_api import socket_path
from node.store import NodeStore
from node.studies import NodeStudies
from node.training import release as release_task
from scifed.config import CoordinatorConfig, NodeConfig, load_config
from scifed.errors import UserError
from scifed.localfed import LocalFederation, free_port
from scifed.sealing import load_seal_key, make_claim, open_sealed, result_context
from scifed.trainspec import TrainSpec


class FlowerCluster:
    def __init__(self, fed: LocalFederation) -> None:
        self.fed = fed
        coord = load_config(fed.coord_dir / "coordinator.yaml", CoordinatorConfig)
        self.db = Database(coord.database_url)
        self.flower = SuperLink(coord.state_dir, coord.tls.files(), port=free_port())
        self.nodes = {n: load_config(fed.node_config(n), NodeConfig) for n in fed.nodes}
        self.supernodes: dict[str, SuperNode] = {}

    def start(self) -> None:
        self.flower.start()
        for name, cfg in self.nodes.items():
            node = SuperNode(name=name, pki_dir=cfg.tls.key.parent, ca=cfg.tls.ca,
                             superlink=self.flower.address, state_dir=cfg.state_dir,
                             local_socket=socket_path(cfg.state_dir))
            self.flower.register_supernode_key(name, node.public_key_pem)
            node.start()
            self.supernodes[name] = node
        missing = set(self.nodes) - self.flower.wait_online(list(self.nodes), 60)
        if missing:
            raise UserError(f"SuperNodes not connected: {', '.join(sorted(missing))}")

    def stop(self) -> None:
        for node in self.supernodes.values():
            node.stop()
        self.flower.stop()

    def job_dir(self, job_id: str, study: str, spec: TrainSpec, datasets: dict[str, str], *,
                min_nodes: int, filter_expr: str | None = None) -> Path:
        view = get_study(self.db, study)
        return prepare_job_dir(
            self.flower, job_id=job_id, study_id=view.study_id, key_version=view.key_version,
            spec=spec, datasets=datasets, filter_expr=filter_expr, min_nodes=min_nodes,
            public_context=get_study_public_context(self.db, view.study_id))

    def release(self, job_dir: Path, checkpoint: dict, *, node: str, dataset: str,
                researcher: str = "alice") -> dict:
        """Run `train.release` at ``node`` and open the sealed result as ``researcher``."""
        cfg = self.nodes[node]
        store = NodeStore(cfg.state_dir / "node.db")
        registry = DatasetRegistry(store, node_name=cfg.name, platform=cfg.platform,
                                   data_dir=cfg.data_dir)
        studies = NodeStudies(store, registry, CoordinatorLink(cfg, registry.published_records))
        rdir = self.fed.researcher_dir
        claim = make_claim(rdir, name=researcher, role="researcher",
                           cert_path=rdir / f"{researcher}.crt", key_path=rdir / "researcher.key")
        request = release_request(job_dir, checkpoint, dataset=dataset,
                                  researcher_claim=claim.to_dict())
        out = release_task(studies, request)
        plain = open_sealed(load_seal_key(rdir), base64.b64decode(out["sealed"]),
                            context=result_context(checkpoint["job_id"]))
        return json.loads(plain)
