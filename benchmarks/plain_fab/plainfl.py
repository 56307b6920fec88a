"""Benchmark-only twin of scifed's `train` app: the same deployment, local API, training
and protocol, but float64 vectors where the real app has BFV ciphertexts, so the
difference in round time and traffic is what HE costs. Never deploy it: the coordinator
would see every node's update in clear. The FAB ships this file; the rest is the
installed scifed package (``jobs.train``). ``benchmarks/train_bench.py`` runs it on the
coordinator's supervised SuperLink, beside a real `train` job.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from jobs.train.client_app import serve
from jobs.train.server_app import HEFedAvg
from protos.scifed.v1 import node_local_pb2 as pb


class PlainCodec:
    def encrypt(self, values: np.ndarray) -> bytes:
        return np.asarray(values, dtype=np.float64).tobytes()

    def encrypt_quantised(self, values: np.ndarray, *, bound: float, capacity: int,
                          rng: np.random.Generator | None = None) -> bytes:
        return self.encrypt(values)  # already clipped to the bound: float64, no levels

    def decrypt(self, blob: bytes) -> np.ndarray:
        return np.frombuffer(blob, dtype=np.float64).copy()


def plain_seal(request: pb.SealUpdateRequest) -> pb.SealUpdateReply:
    """The update as float64 bytes, unmasked (the node's SealUpdate masks and encrypts)."""
    return pb.SealUpdateReply(sealed=bool(request.vectors), ciphertexts={
        v.name: np.load(io.BytesIO(v.values)).tobytes() for v in request.vectors})


class PlainFedAvg(HEFedAvg):
    masked = False  # nothing to reveal or take off

    def _sum(self, blobs: list[bytes]) -> bytes:
        return np.sum([np.frombuffer(b, dtype=np.float64) for b in blobs], axis=0).tobytes()


clientapp = ClientApp()


@clientapp.train()
def train(msg: Message, context: Context) -> Message:
    return serve(msg, context, final=False, open_key=lambda _: PlainCodec(),
                 seal_with=plain_seal)


@clientapp.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return serve(msg, context, final=True, open_key=lambda _: PlainCodec(),
                 seal_with=plain_seal)


serverapp = ServerApp()


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    PlainFedAvg(Path(str(context.run_config["job-dir"])), context.run_id).run(grid)
