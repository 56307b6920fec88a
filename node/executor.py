"""The node's own ClientApp executor: one long-lived process that takes the SuperNode's
tasks, has the node check each task's app bundle, and runs only what the node trusts.

Why not Flower's own executor: with ``--isolation subprocess`` a SuperNode starts a stock
``flwr-clientapp`` process per message, which installs the FAB the SuperLink sent and
runs whatever ClientApp it names — so a coordinator that deviates could ship code of its
own that asks the local API for the granted rows. The node therefore runs its SuperNode
with ``--isolation process`` (no executor of its own; ``node/flower.py``) and this
process in its place. For every task it pulls the task input from the SuperNode's
Runtime API, sends the FAB's bytes to the node's local API (``CheckApp``,
``node/apps.py``), and then runs the installed ClientApp of the node's own job type
(never code from the bundle), or an officer-approved bundle as shipped, or nothing: a
refused app gets an error reply naming the node and the hash, and no grant is ever asked
for, so no row is read.

Being long-lived also saves the imports a fresh process pays per message (PyTorch, Opacus,
TenSEAL, scifed): they happen once, at start.

Runtime API access: the SuperNode serves it on loopback, and every task is bound to a
token the SuperNode issues on ``AcquireTask``; that call is authenticated with a shared
secret (``--superexec-auth-secret-file``, 0600 in the node's state directory), so another
local account cannot take the node's tasks. The SuperNode picks a fresh port at each
(re)start and writes it to a file; this process re-reads it whenever a call fails.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import threading
import time
from pathlib import Path

import grpc
import httpx

log = logging.getLogger("scifed.node.executor")

# Between AcquireTask calls: POLL_MIN_SECONDS after a task, growing by POLL_GROWTH per empty
# call up to POLL_MAX_SECONDS (Flower's own SuperExec polls every 1 s): the next round's
# task is taken soon after it arrives, and an idle node costs its SuperNode two calls a second.
POLL_MIN_SECONDS, POLL_GROWTH, POLL_MAX_SECONDS = 0.02, 1.2, 0.5
HEARTBEAT_SECONDS = 10.0
_CALL_TRIES = 5
_ACQUIRE = frozenset({"/flwr.proto.Runtime/AcquireTask"})
_LOCAL_API_TIMEOUT = 60.0


def _retry():
    """Bounded retries on transport errors; HTTP errors go to the caller (Flower's own
    invoker signals its process to exit on a 401, which would end this long-lived one)."""
    from flwr.supercore.retry.retry_invoker import RetryInvoker, exponential

    return RetryInvoker(lambda: exponential(max_delay=2), (httpx.TransportError,),
                        max_tries=_CALL_TRIES, max_time=None, jitter=None)


class Executor:
    def __init__(self, *, port_file: Path, secret_file: Path, local_api: str) -> None:
        self.port_file = Path(port_file)
        self.secret_file = Path(secret_file)
        self.local_api = local_api
        self._address, self._secret = "", b""
        self._client = None
        self._apps: dict[str, object] = {}

    # -- the loop -------------------------------------------------------------------------
    def serve_forever(self) -> None:
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        wait = POLL_MIN_SECONDS
        while True:
            try:
                res = self._acquirer().AcquireTask(request)
            except (httpx.HTTPError, OSError, ValueError) as exc:
                log.debug("AcquireTask at %s failed: %s", self._address, exc)
                self._client = None  # the SuperNode may have restarted on a new port
                time.sleep(1.0)
                continue
            if res.HasField("task") and res.token:
                self.run_task(res.token)
                wait = POLL_MIN_SECONDS
            else:
                time.sleep(wait)
                wait = min(wait * POLL_GROWTH, POLL_MAX_SECONDS)

    def _acquirer(self):
        from flwr.supercore.interceptors import (
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )

        if self._client is None:  # (re)read both: a restarted SuperNode has new ones
            self._address = f"127.0.0.1:{int(self.port_file.read_text())}"
            self._secret = self.secret_file.read_bytes()
            self._client = self._http_client(
                [RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                 SuperExecAuthHttpInterceptor(master_secret=self._secret,
                                              protected_methods=_ACQUIRE)])
        return self._client

    def _http_client(self, interceptors):
        from flwr.supercore.runtime import RuntimeHttpClient

        return RuntimeHttpClient.from_server_address(
            server_address=self._address, insecure=True, root_certificates=None,
            interceptors=interceptors, retry_invoker=_retry())

    # -- one task -------------------------------------------------------------------------
    def run_task(self, token: str) -> None:
        """Pull the task, check its app, run it (or refuse), push the reply and status."""
        from flwr.common.constant import SubStatus
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )
        from flwr.supernode.runtime.run_clientapp import (
            pull_task_input,
            push_message,
            push_task_output,
        )

        client = self._http_client([RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                                    RuntimeTokenHttpInterceptor(token)])
        beat = _Heartbeat(client)
        context, reply = None, None
        status, details = SubStatus.FAILED, "the ClientApp task failed"
        try:
            message, context, run, fab = pull_task_input(client)
            beat.start()
            reply, status, details = self._answer(message, context, run, fab)
        except Exception as exc:  # noqa: BLE001 - one task's failure must not end the loop
            log.exception("a ClientApp task failed")
            details = f"{type(exc).__name__} at the node's ClientApp executor"
        finally:
            beat.stop()
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            except Exception:  # noqa: BLE001
                log.exception("pushing the ClientApp's reply failed")
            push_task_output(client=client, context=context, sub_status=status,
                             details=details)
            client.close()

    def _answer(self, message, context, run, fab):
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.common.constant import ErrorCode, SubStatus

        verdict = self._check(fab.content, run.run_id, message)
        if not verdict.trusted:
            reply = Message(Error(code=ErrorCode.LOAD_CLIENT_APP_EXCEPTION,
                                  reason=verdict.reason), reply_to=message)
            return reply, SubStatus.FAILED, verdict.reason
        app = self._load(verdict, run, fab)
        try:
            reply = app(message=message, context=context)
        except Exception as exc:  # noqa: BLE001 - the ClientApp's own failure
            log.exception("the ClientApp raised")
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                  reason=f"{type(exc).__name__} in the ClientApp"),
                            reply_to=message)
            return reply, SubStatus.FAILED, "the ClientApp raised"
        return reply, SubStatus.COMPLETED, ""

    def _check(self, content: bytes, run_id: int, message):
        from protos.scifed.v1 import node_local_pb2 as pb
        from protos.scifed.v1 import node_local_pb2_grpc as pbg

        job_id = ""
        for record in message.content.config_records.values():
            job_id = str(record.get("job-id", "")) or job_id
        with grpc.insecure_channel(self.local_api) as channel:
            return pbg.NodeLocalStub(channel).CheckApp(
                pb.CheckAppRequest(fab=content, run_id=run_id, job_id=job_id),
                timeout=_LOCAL_API_TIMEOUT)

    def _load(self, verdict, run, fab):
        """The ClientApp object: the installed one of the node's own job type, or (for an
        app the officer approved by hash) the one the bundle ships, installed by Flower."""
        key = verdict.client_app or verdict.sha256
        if key not in self._apps:
            if verdict.client_app:
                module, _, attr = verdict.client_app.partition(":")
                self._apps[key] = getattr(importlib.import_module(module), attr)
            else:  # from where the bundle itself says it installs, never from the run's
                # fab_id / fab_version (the coordinator's words: a version with "../" in
                # it would lead Flower's loader to a directory someone else planted)
                from flwr.cli.install import install_from_fab
                from flwr.clientapp.utils import get_load_client_app_fn
                from flwr.common.config import get_metadata_from_config, get_project_config

                installed = install_from_fab(fab.content, skip_prompt=True)
                fab_id, version = get_metadata_from_config(get_project_config(installed))
                load = get_load_client_app_fn(default_app_ref="", app_path=str(installed),
                                              multi_app=True)
                self._apps[key] = load(fab_id, version, verdict.sha256)
        return self._apps[key]


class _Heartbeat:
    """Keeps a running task alive at the SuperNode (Flower's sender would signal this
    process to exit when the SuperNode no longer knows the task)."""

    def __init__(self, client) -> None:
        self.client = client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="task-heartbeat")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
            except (httpx.HTTPError, OSError) as exc:
                log.debug("task heartbeat failed: %s", exc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m node.executor",
                                     description="the node's ClientApp executor")
    parser.add_argument("--runtime-port-file", type=Path, required=True)
    parser.add_argument("--superexec-auth-secret-file", type=Path, required=True)
    parser.add_argument("--local-api", required=True, help="unix:PATH of the local API")
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    from flwr.supercore.app_utils import start_parent_process_monitor

    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)
    from scifed import flower_pacing

    if flower_pacing.apply_for(("pull-backoff",)):  # a message's objects, from the SuperNode
        log.info("Flower pacing on (%s=off to turn it off)", flower_pacing.ENV)
    # Warm up once what every task would otherwise import afresh.
    import jobs  # noqa: F401 - registers the job types
    for name in jobs.registry.names():
        app = jobs.registry.get(name).flower_app
        if app is not None:
            importlib.import_module(app.client_app.partition(":")[0])
    import torch  # noqa: F401

    log.info("ClientApp executor ready (pid %d)", os.getpid())
    Executor(port_file=args.runtime_port_file, secret_file=args.superexec_auth_secret_file,
             local_api=args.local_api).serve_forever()


if __name__ == "__main__":
    main()
