"""Benchmark-only Flower app whose rounds do no work: the ServerApp sends one message to
every online node and waits for all replies, exactly as scifed's `train` ServerApp does
(same push, same pull interval), and the ClientApp answers at once with an empty record.
Run on the coordinator's SuperLink and the nodes' SuperNodes (``benchmarks/train_bench.py``),
its round time is the floor a `train` round stands on in the same deployment: Flower's
message path, the node's executor and its app check — no grant, data, training or HE.

It writes what ``jobs.train.coordinate.train_on_flower`` follows: a ``checkpoint.json``
with per-round seconds, complete once the last round is done.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from jobs.train.protocol import CHECKPOINT_FILE, RUN_FILE, write_json
from jobs.train.server_app import POLL_SECONDS

clientapp = ClientApp()


@clientapp.train()
def train(msg: Message, context: Context) -> Message:
    return Message(RecordDict(), reply_to=msg)


serverapp = ServerApp()


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    job_dir = Path(str(context.run_config["job-dir"]))
    spec = json.loads((job_dir / RUN_FILE).read_text())["spec"]
    state = {"round": 0, "round_seconds": {}, "flower_runs": [context.run_id],
             "complete": False}
    for r in range(1, int(spec["rounds"]) + 1):
        started = time.monotonic()
        nodes = [n.node_id for n in grid.get_nodes() if n.status == "online"]
        messages = [Message(RecordDict({"config": ConfigRecord({"round": r})}),
                            dst_node_id=node, message_type=MessageType.TRAIN,
                            group_id=str(r), ttl=float(spec["round_timeout"]))
                    for node in nodes]
        pending = {mid for mid in grid.push_messages(messages) if mid}
        deadline = started + float(spec["round_timeout"])
        while pending and time.monotonic() < deadline:
            for reply in grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
            if pending:
                time.sleep(POLL_SECONDS)
        if pending:
            raise RuntimeError(f"round {r}: {len(pending)} node(s) did not reply")
        state["round"] = r
        state["round_seconds"][str(r)] = time.monotonic() - started
        write_json(job_dir / CHECKPOINT_FILE, state)
    state["complete"] = True
    write_json(job_dir / CHECKPOINT_FILE, state)
