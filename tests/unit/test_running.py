"""An ended job stops computing at the node (node/running.py, node/data.py), and a
result a restarted coordinator can never use is dropped by the link (node/link.py)."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from node.data import DataFile
from node.link import Outbox
from node.running import RunningJobs, Stopped
from protos.scifed.v1 import federation_pb2 as pb

# a query DuckDB would need hours for: only an interrupt ends it
ENDLESS = "SELECT count(*) FROM d a, d b, d c, d e WHERE a.c0 + b.c0 > c.c0 - e.c0"


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"x": range(2000)}).to_csv(path, index=False)
    return path


def test_the_end_of_a_job_interrupts_its_running_query(table):
    running = RunningJobs()
    data = DataFile(table, job=(running, "j1"))
    started = threading.Event()

    def cancel() -> None:
        started.wait(5)
        time.sleep(0.5)  # the query is running by now
        assert running.end("j1", "cancelled by alice") == 1

    threading.Thread(target=cancel).start()
    started.set()
    with pytest.raises(Stopped, match="cancelled by alice"):
        data.query(["x"], ENDLESS)
    with pytest.raises(Stopped):  # and every later read of the task refuses
        data.query(["x"], "SELECT count(*) FROM d")
    data.close()


def test_an_ended_job_opens_no_data_and_other_jobs_go_on(table):
    running = RunningJobs()
    running.end("j1", "the job was cancelled or failed")
    with pytest.raises(Stopped, match="has ended"):
        DataFile(table, job=(running, "j1"))
    with pytest.raises(Stopped):
        running.refuse_if_ended("j1")
    with DataFile(table, job=(running, "j2")) as data:
        assert data.query(["x"], "SELECT count(*) FROM d") == [(2000,)]
    assert running.end_all("stopping") == 0  # j2's read was closed, nothing left open


def test_stopping_the_node_interrupts_every_job(table):
    running = RunningJobs()
    readers = [DataFile(table, job=(running, f"j{i}")) for i in range(3)]
    assert running.end_all("the node is stopping") == 3
    for data in readers:
        with pytest.raises(Stopped, match="stopping"):
            data.query(["x"], "SELECT 1")
        data.close()


def _result(task_id: str) -> tuple[pb.Task, pb.TaskResult]:
    return (pb.Task(task_id=task_id, kind="job.compute"),
            pb.TaskResult(task_id=task_id, ok=True))


def test_the_outbox_strands_only_what_an_earlier_coordinator_instance_asked():
    stranded: list[str] = []
    box = Outbox(lambda task, result: stranded.append(task.task_id))
    box.registered("one")
    box.put("one", *_result("a"))
    box.registered("one")  # a blip: the same instance, nothing dropped
    assert box.take(0).task_id == "a"
    box.put("one", *_result("b"))   # answered while the link was down
    box.registered("two")           # ... and the coordinator restarted
    assert stranded == ["b"] and box.empty()
    box.put("one", *_result("c"))   # a task of the old instance ends after the restart
    box.put("two", *_result("d"))
    assert box.take(0) is None and stranded == ["b", "c"]
    assert box.take(0).task_id == "d"
