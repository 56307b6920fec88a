from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("platform", "software_version", "seal_claim_json", "supernode_public_key")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEAL_CLAIM_JSON_FIELD_NUMBER: _ClassVar[int]
    SUPERNODE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    platform: str
    software_version: str
    seal_claim_json: str
    supernode_public_key: str
    def __init__(self, platform: _Optional[str] = ..., software_version: _Optional[str] = ..., seal_claim_json: _Optional[str] = ..., supernode_public_key: _Optional[str] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("node_name", "heartbeat_seconds", "coordinator_version", "flower_epoch", "instance", "crl")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    FLOWER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CRL_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    heartbeat_seconds: int
    coordinator_version: str
    flower_epoch: str
    instance: str
    crl: bytes
    def __init__(self, node_name: _Optional[str] = ..., heartbeat_seconds: _Optional[int] = ..., coordinator_version: _Optional[str] = ..., flower_epoch: _Optional[str] = ..., instance: _Optional[str] = ..., crl: _Optional[bytes] = ...) -> None: ...

class NodeMessage(_message.Message):
    __slots__ = ("heartbeat", "result")
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    heartbeat: Heartbeat
    result: TaskResult
    def __init__(self, heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_unix_ms", "audit_seq", "audit_hash")
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HASH_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ms: int
    audit_seq: int
    audit_hash: str
    def __init__(self, sent_unix_ms: _Optional[int] = ..., audit_seq: _Optional[int] = ..., audit_hash: _Optional[str] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("task", "ack")
    TASK_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    ack: HeartbeatAck
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("server_unix_ms", "crl")
    SERVER_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CRL_FIELD_NUMBER: _ClassVar[int]
    server_unix_ms: int
    crl: bytes
    def __init__(self, server_unix_ms: _Optional[int] = ..., crl: _Optional[bytes] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "kind", "payload", "crl", "node_certs")
    class NodeCertsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CRL_FIELD_NUMBER: _ClassVar[int]
    NODE_CERTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    payload: bytes
    crl: bytes
    node_certs: _containers.ScalarMap[str, bytes]
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., payload: _Optional[bytes] = ..., crl: _Optional[bytes] = ..., node_certs: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "ok", "error", "payload", "audit_seq", "audit_hash", "error_said")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HASH_FIELD_NUMBER: _ClassVar[int]
    ERROR_SAID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    ok: bool
    error: str
    payload: bytes
    audit_seq: int
    audit_hash: str
    error_said: str
    def __init__(self, task_id: _Optional[str] = ..., ok: bool = ..., error: _Optional[str] = ..., payload: _Optional[bytes] = ..., audit_seq: _Optional[int] = ..., audit_hash: _Optional[str] = ..., error_said: _Optional[str] = ...) -> None: ...

class SyncCatalogRequest(_message.Message):
    __slots__ = ("records_json",)
    RECORDS_JSON_FIELD_NUMBER: _ClassVar[int]
    records_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, records_json: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncCatalogReply(_message.Message):
    __slots__ = ("indexed", "removed")
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    indexed: int
    removed: int
    def __init__(self, indexed: _Optional[int] = ..., removed: _Optional[int] = ...) -> None: ...

class StudyMember(_message.Message):
    __slots__ = ("node", "state", "datasets")
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    node: str
    state: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., state: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ...) -> None: ...

class StudyInfo(_message.Message):
    __slots__ = ("study_id", "name", "purpose", "status", "min_nodes", "members", "researchers", "key_version", "lead_node")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MIN_NODES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RESEARCHERS_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEAD_NODE_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    name: str
    purpose: str
    status: str
    min_nodes: int
    members: _containers.RepeatedCompositeFieldContainer[StudyMember]
    researchers: _containers.RepeatedScalarFieldContainer[str]
    key_version: int
    lead_node: str
    def __init__(self, study_id: _Optional[str] = ..., name: _Optional[str] = ..., purpose: _Optional[str] = ..., status: _Optional[str] = ..., min_nodes: _Optional[int] = ..., members: _Optional[_Iterable[_Union[StudyMember, _Mapping]]] = ..., researchers: _Optional[_Iterable[str]] = ..., key_version: _Optional[int] = ..., lead_node: _Optional[str] = ...) -> None: ...

class ListInvitationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListInvitationsReply(_message.Message):
    __slots__ = ("studies",)
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[StudyInfo]
    def __init__(self, studies: _Optional[_Iterable[_Union[StudyInfo, _Mapping]]] = ...) -> None: ...

class AnswerInvitationRequest(_message.Message):
    __slots__ = ("study_id", "accept", "datasets")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    accept: bool
    datasets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, study_id: _Optional[str] = ..., accept: bool = ..., datasets: _Optional[_Iterable[str]] = ...) -> None: ...

class AuditHeadsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuditHead(_message.Message):
    __slots__ = ("seq", "hash", "received_unix_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: str
    received_unix_ms: int
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[str] = ..., received_unix_ms: _Optional[int] = ...) -> None: ...

class AuditHeadsReply(_message.Message):
    __slots__ = ("heads",)
    HEADS_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[AuditHead]
    def __init__(self, heads: _Optional[_Iterable[_Union[AuditHead, _Mapping]]] = ...) -> None: ...
