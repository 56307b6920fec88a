"""What a node does for each task kind the coordinator sends.

Before touching data every handler checks, at the node: the officer accepted the study
and attached this dataset to it, and the dataset's policy cell admits the computation.
Contributions leave only encrypted under the study key; state a release node keeps
between rounds travels sealed under a key only study members can derive.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import numpy as np

from node.datasets import DatasetRegistry
from node.jobs import stats
from node.jobs.quantiles import QuantileSearch, count_le
from node.store import DatasetRow
from node.studies import NodeStudies
from scifed.errors import UserError
from scifed.filters import compile_filter
from scifed.grading import Access, aggregate_access, min_cell_count
from scifed.he import StudyKey, open_box, seal_box
from scifed.jobspec import JobSpec
from scifed.sealing import SealKeyClaim, result_context, seal, verify_claim


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64d(text: str) -> bytes:
    return base64.b64decode(text)


class StatsTasks:
    def __init__(self, studies: NodeStudies, registry: DatasetRegistry) -> None:
        self.studies = studies
        self.registry = registry
        self.node = studies.cfg.name

    def handlers(self) -> dict[str, Callable[[bytes], bytes]]:
        return {"study.keygen": self.studies.generate_key,
                "stats.vocab": self._json(self.vocab),
                "stats.compute": self._json(self.compute),
                "stats.count": self._json(self.count),
                "stats.release": self._json(self.release)}

    @staticmethod
    def _json(fn: Callable[[dict], dict]) -> Callable[[bytes], bytes]:
        return lambda payload: json.dumps(fn(json.loads(payload))).encode()

    # -- checks -------------------------------------------------------------------------
    def _prepare(self, req: dict) -> tuple[DatasetRow, JobSpec, tuple | None, int]:
        row = self.studies.attached(req["study_id"], req["dataset"])
        rec = row.record
        grade, category = rec["security_grade"], rec["sharing_category"]
        access = aggregate_access(grade, category)
        if access is Access.FORBIDDEN:
            raise UserError(f"node {self.node}: statistics on {grade} {category} data are "
                            "forbidden by the policy matrix (governance §2.6)")
        if access is Access.APPROVAL:
            raise UserError(f"node {self.node}: statistics on {grade} {category} data need "
                            "the data officer's approval of this job")
        spec = JobSpec.model_validate(req["spec"])
        types = {f["name"]: f["type"] for f in rec.get("fields", [])}
        flt = compile_filter(spec.filter, types) if spec.filter else None
        return row, spec, flt, min_cell_count(grade, category)

    def _key(self, req: dict) -> StudyKey:
        return self.studies.key(req["study_id"], int(req["key_version"]))

    # -- phases ---------------------------------------------------------------------------
    def vocab(self, req: dict) -> dict:
        row, spec, flt, _ = self._prepare(req)
        path = self.registry.data_path(row.dataset_id)
        values = stats.vocabulary(path, spec.stats, flt)
        box = self._key(req).aead_key("stats-vocabulary")
        return {"vocabulary": b64e(seal_box(box, json.dumps(values).encode(),
                                            req["job_id"].encode()))}

    def _vocabulary(self, req: dict) -> dict[str, list[str]]:
        """The union of every contributing node's categories, opened here."""
        box = self._key(req).aead_key("stats-vocabulary")
        union: dict[str, set[str]] = {}
        for blob in req.get("vocabularies", []):
            part = json.loads(open_box(box, b64d(blob), req["job_id"].encode()))
            for col, values in part.items():
                union.setdefault(col, set()).update(values)
        return {col: sorted(values) for col, values in union.items()}

    def compute(self, req: dict) -> dict:
        row, spec, flt, k = self._prepare(req)
        vector = stats.compute(self.registry.data_path(row.dataset_id), spec.stats,
                               self._vocabulary(req), k=k, filter_sql=flt)
        return {"ciphertext": b64e(self._key(req).encrypt(vector)), "k": k}

    def count(self, req: dict) -> dict:
        row, spec, flt, _ = self._prepare(req)
        key = self._key(req)
        query = json.loads(open_box(key.aead_key("stats-query"), b64d(req["query"]),
                                    req["job_id"].encode()))
        path = self.registry.data_path(row.dataset_id)
        parts = [count_le(path, col, query[col], flt) for col in sorted(query)]
        return {"ciphertext": b64e(key.encrypt(np.concatenate(parts)))}

    def release(self, req: dict) -> dict:
        """Decrypt the pooled vector, apply the aggregate-level rules, and either ask for
        another round (exact quantiles) or seal the result to the researcher."""
        self._prepare(req)  # the release node must itself be a member with its dataset
        spec = JobSpec.model_validate(req["spec"])
        key = self._key(req)
        job_id, k = req["job_id"], int(req["k"])
        total = key.decrypt(b64d(req["aggregate"]))
        state_key, aad = key.aead_key("stats-state"), job_id.encode()
        if "state" not in req:
            vocab = self._vocabulary(req)
            result = stats.decode(total, spec.stats, vocab, k=k)
            search = None
            if spec.stats.quantiles:
                pooled_n = stats.pooled_quantile_n(total, spec.stats, vocab)
                search = QuantileSearch.start(spec.stats, pooled_n, k=k)
        else:
            state = json.loads(open_box(state_key, b64d(req["state"]), aad))
            result = state["result"]
            search = QuantileSearch.from_json(state["search"])
            counts, offset = {}, 0
            for col, thresholds in sorted(search.thresholds().items()):
                counts[col] = [stats.pooled_count(v, f"count of {col} below a threshold")
                               for v in total[offset:offset + len(thresholds)]]
                offset += len(thresholds)
            search.update(counts)
        if search is not None and not search.done:
            state = {"result": result, "search": search.to_json()}
            return {"state": b64e(seal_box(state_key, json.dumps(state).encode(), aad)),
                    "query": b64e(seal_box(key.aead_key("stats-query"),
                                           json.dumps(search.thresholds()).encode(), aad))}
        if search is not None:
            result["quantiles"] = search.result()
            result["quantile_rounds"] = search.rounds
            if search.refused:
                notes = result.setdefault("suppression", {}).setdefault("notes", [])
                notes += [f"quantiles of {c}: {why}" for c, why in search.refused.items()]
        result["meta"] = {"job_id": job_id, "study_id": req["study_id"],
                          "contributors": req["contributors"], "k": k,
                          "released_by": self.node,
                          "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        claim = SealKeyClaim.from_dict(req["researcher_claim"])
        public = verify_claim(claim, self.studies.cfg.tls.ca.read_bytes(),
                              expect_role="researcher")
        sealed = seal(public, json.dumps(result).encode(), context=result_context(job_id))
        return {"sealed": b64e(sealed)}
