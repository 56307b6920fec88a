"""A node's refusal that comes back as a call's error (an access request, a download's
manifest) keeps its sentence's key and fields all the way: the node's task result carries
them beside its English text, the coordinator's relay passes them on in the status's
trailing metadata, and the researcher's console shows the sentence in its page's
language, while the status's message — what the CLI prints — is the node's English."""

from __future__ import annotations

import concurrent.futures
import json
from types import SimpleNamespace

import grpc
import pytest

from coordinator.access import AccessRelay
from protos.scifed.v1 import federation_pb2 as pb
from scifed import sentences
from scifed.errors import UserError
from scifed.rpc import SAID_KEY, rpc_error_message, user_errors
from scifed.sentences import say
from scifed.web import i18n

REFUSAL = say("desk.refuses", node="biscoe",
              what=say("desk.what.method", method="download", dataset="urn:sdn:biscoe:ds:w"),
              reason=say("desk.study"))
ENGLISH = ("node biscoe refuses download of urn:sdn:biscoe:ds:w: CONDITIONAL data is "
           "delivered within a study the dataset is in: name it (--study)")


class _Sessions:
    """A node's answer to one relayed task, as the coordinator's sessions deliver it."""

    def __init__(self, result: pb.TaskResult) -> None:
        self.result = result

    def send(self, node, kind, payload):
        done = concurrent.futures.Future()
        done.set_result(self.result)
        return done


def relayed(result: pb.TaskResult) -> UserError:
    relay = AccessRelay(db=None, sessions=_Sessions(result), timeout=5)
    with pytest.raises(UserError) as caught:
        relay._ask("biscoe", "access.request", b"{}")
    return caught.value


def test_the_node_sends_its_refusals_key_beside_its_english():
    assert str(REFUSAL) == ENGLISH
    result = pb.TaskResult(task_id="t", ok=False, error=REFUSAL,
                           error_said=sentences.dumps(REFUSAL))
    exc = relayed(result)
    assert str(exc) == ENGLISH  # the coordinator's message is the node's words
    said = sentences.of_error(exc)
    assert said.key == "desk.refuses"
    assert i18n.Translator("zh").said(said) == (
        "节点 biscoe 拒绝 urn:sdn:biscoe:ds:w 的下载：CONDITIONAL 数据只在其所属的研究项目内交付："
        "请指明研究项目（--study）")


@pytest.mark.parametrize("said", ["", "not json", json.dumps({"key": "no.such", "fields": {}}),
                                  "[" * 5000, json.dumps({"key": "desk.study",
                                                          "fields": {"x": "y" * 9000}})])
def test_a_refusals_key_that_is_not_one_of_ours_leaves_the_english(said):
    exc = relayed(pb.TaskResult(task_id="t", ok=False, error="plain words", error_said=said))
    assert sentences.of_error(exc) == "plain words"
    assert i18n.Translator("zh").said(sentences.of_error(exc)) == "plain words"


@pytest.fixture
def server():
    """A gRPC service whose one method refuses as the coordinator's do (user_errors)."""
    raised: list[Exception] = []

    class Api:
        @user_errors
        def call(self, request, context):
            raise raised[0]

    api = Api()
    handler = grpc.method_handlers_generic_handler("t.Api", {
        "Call": grpc.unary_unary_rpc_method_handler(api.call)})
    srv = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    srv.add_generic_rpc_handlers((handler,))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/t.Api/Call")

    def refused(exc: Exception) -> grpc.RpcError:
        raised[:] = [exc]
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=10)
        return caught.value

    yield refused
    channel.close()
    srv.stop(None)


def test_a_refusal_crosses_grpc_with_its_key_and_reads_as_before(server):
    err = server(UserError(REFUSAL))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == ENGLISH  # what the CLI prints
    assert dict(err.trailing_metadata())[SAID_KEY] == sentences.dumps(REFUSAL).encode()
    shown = rpc_error_message(err, "the coordinator")
    assert shown == ENGLISH
    assert i18n.Translator("zh").said(shown).startswith("节点 biscoe 拒绝")
    assert i18n.Translator("en").said(shown) == ENGLISH


def test_a_plain_refusal_crosses_grpc_as_plain_text(server):
    err = server(UserError("no such study"))
    assert SAID_KEY not in dict(err.trailing_metadata() or ())
    shown = rpc_error_message(err, "the coordinator")
    assert shown == "no such study" and getattr(shown, "key", None) is None


def test_the_nodes_clear_refusal_of_a_delivery_task_carries_its_key():
    from node.runner import NodeRunner

    runner = SimpleNamespace(gate=SimpleNamespace(node="biscoe"), ca_pem=b"",
                             _is_job_header=NodeRunner._is_job_header)
    task = pb.Task(task_id="t", kind="access.request", payload=b'{"statement": {}}')
    result = NodeRunner._refusal(runner, task, REFUSAL)
    assert (result.ok, result.error, result.payload) == (False, ENGLISH, b"")
    assert json.loads(result.error_said) == REFUSAL.structure()
