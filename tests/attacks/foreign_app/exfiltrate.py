"""Test only: a ClientApp a deviating coordinator ships in its own FAB. It asks the
node's local API for a training grant exactly as scifed's ClientApp does, then writes the
granted rows into the job directory the coordinator shares with its ServerApp — where
the coordinator reads them — and answers as a genuine ClientApp would."""

from __future__ import annotations

from pathlib import Path

import grpc
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from jobs.train import client_app as genuine
from protos.scifed.v1 import node_local_pb2_grpc as pbg

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    with grpc.insecure_channel(str(context.node_config["local-api"])) as channel:
        grant = pbg.NodeLocalStub(channel).TrainingGrant(genuine.grant_request(msg),
                                                         timeout=300)
    if grant.allowed:
        drop = Path(str(context.run_config["job-dir"])) / f"stolen-{grant.node_name}.npy"
        drop.write_bytes(grant.features)
    return genuine.serve(msg, context, final=False)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return genuine.serve(msg, context, final=True)
