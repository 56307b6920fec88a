from protos.scifed.v1 import federation_pb2 as _federation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIReply(_message.Message):
    __slots__ = ("name", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "subjects", "platforms", "grades", "categories", "keywords", "columns", "limit", "min_quality")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    GRADES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    query: str
    subjects: _containers.RepeatedScalarFieldContainer[str]
    platforms: _containers.RepeatedScalarFieldContainer[str]
    grades: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    keywords: _containers.RepeatedScalarFieldContainer[str]
    columns: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    min_quality: str
    def __init__(self, query: _Optional[str] = ..., subjects: _Optional[_Iterable[str]] = ..., platforms: _Optional[_Iterable[str]] = ..., grades: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ..., keywords: _Optional[_Iterable[str]] = ..., columns: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., min_quality: _Optional[str] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("record_id", "title", "node", "platform", "grade", "category", "subjects", "stub", "record_count", "quality")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    STUB_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    title: str
    node: str
    platform: str
    grade: str
    category: str
    subjects: _containers.RepeatedScalarFieldContainer[str]
    stub: bool
    record_count: int
    quality: str
    def __init__(self, record_id: _Optional[str] = ..., title: _Optional[str] = ..., node: _Optional[str] = ..., platform: _Optional[str] = ..., grade: _Optional[str] = ..., category: _Optional[str] = ..., subjects: _Optional[_Iterable[str]] = ..., stub: bool = ..., record_count: _Optional[int] = ..., quality: _Optional[str] = ...) -> None: ...

class SearchReply(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class GetRecordRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class RecordReply(_message.Message):
    __slots__ = ("record_json", "node")
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    record_json: str
    node: str
    def __init__(self, record_json: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("name", "platform", "online", "last_seen_unix_ms", "datasets", "software_version", "audit_seq", "audit_hash", "audit_received_unix_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HASH_FIELD_NUMBER: _ClassVar[int]
    AUDIT_RECEIVED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    platform: str
    online: bool
    last_seen_unix_ms: int
    datasets: int
    software_version: str
    audit_seq: int
    audit_hash: str
    audit_received_unix_ms: int
    def __init__(self, name: _Optional[str] = ..., platform: _Optional[str] = ..., online: bool = ..., last_seen_unix_ms: _Optional[int] = ..., datasets: _Optional[int] = ..., software_version: _Optional[str] = ..., audit_seq: _Optional[int] = ..., audit_hash: _Optional[str] = ..., audit_received_unix_ms: _Optional[int] = ...) -> None: ...

class ListNodesReply(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class CreateStudyRequest(_message.Message):
    __slots__ = ("name", "purpose", "nodes", "min_nodes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    MIN_NODES_FIELD_NUMBER: _ClassVar[int]
    name: str
    purpose: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    min_nodes: int
    def __init__(self, name: _Optional[str] = ..., purpose: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ..., min_nodes: _Optional[int] = ...) -> None: ...

class AddResearcherRequest(_message.Message):
    __slots__ = ("study", "researcher")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    RESEARCHER_FIELD_NUMBER: _ClassVar[int]
    study: str
    researcher: str
    def __init__(self, study: _Optional[str] = ..., researcher: _Optional[str] = ...) -> None: ...

class ListStudiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStudiesReply(_message.Message):
    __slots__ = ("studies",)
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[_federation_pb2.StudyInfo]
    def __init__(self, studies: _Optional[_Iterable[_Union[_federation_pb2.StudyInfo, _Mapping]]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec_yaml", "spec_name", "seal_claim_json")
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    SPEC_NAME_FIELD_NUMBER: _ClassVar[int]
    SEAL_CLAIM_JSON_FIELD_NUMBER: _ClassVar[int]
    spec_yaml: str
    spec_name: str
    seal_claim_json: str
    def __init__(self, spec_yaml: _Optional[str] = ..., spec_name: _Optional[str] = ..., seal_claim_json: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "wait_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    wait_ms: int
    def __init__(self, job_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("study", "status", "limit")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    study: str
    status: str
    limit: int
    def __init__(self, study: _Optional[str] = ..., status: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsReply(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class NodeTask(_message.Message):
    __slots__ = ("node", "phase", "state", "detail", "updated_unix_ms", "sealed_reason")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SEALED_REASON_FIELD_NUMBER: _ClassVar[int]
    node: str
    phase: str
    state: str
    detail: str
    updated_unix_ms: int
    sealed_reason: bytes
    def __init__(self, node: _Optional[str] = ..., phase: _Optional[str] = ..., state: _Optional[str] = ..., detail: _Optional[str] = ..., updated_unix_ms: _Optional[int] = ..., sealed_reason: _Optional[bytes] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "study", "type", "status", "phase", "error", "tasks", "created_unix_ms", "updated_unix_ms", "contributors", "progress", "phase_info", "researcher")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PHASE_INFO_FIELD_NUMBER: _ClassVar[int]
    RESEARCHER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    study: str
    type: str
    status: str
    phase: str
    error: str
    tasks: _containers.RepeatedCompositeFieldContainer[NodeTask]
    created_unix_ms: int
    updated_unix_ms: int
    contributors: _containers.RepeatedScalarFieldContainer[str]
    progress: _containers.RepeatedCompositeFieldContainer[RoundProgress]
    phase_info: Phase
    researcher: str
    def __init__(self, job_id: _Optional[str] = ..., study: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[str] = ..., phase: _Optional[str] = ..., error: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[NodeTask, _Mapping]]] = ..., created_unix_ms: _Optional[int] = ..., updated_unix_ms: _Optional[int] = ..., contributors: _Optional[_Iterable[str]] = ..., progress: _Optional[_Iterable[_Union[RoundProgress, _Mapping]]] = ..., phase_info: _Optional[_Union[Phase, _Mapping]] = ..., researcher: _Optional[str] = ...) -> None: ...

class Phase(_message.Message):
    __slots__ = ("name", "round", "rounds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    round: int
    rounds: int
    def __init__(self, name: _Optional[str] = ..., round: _Optional[int] = ..., rounds: _Optional[int] = ...) -> None: ...

class RoundProgress(_message.Message):
    __slots__ = ("round", "sealed")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    round: int
    sealed: bytes
    def __init__(self, round: _Optional[int] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class ResultReply(_message.Message):
    __slots__ = ("job_id", "sealed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sealed: bytes
    def __init__(self, job_id: _Optional[str] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class ListRevocationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokedCertificate(_message.Message):
    __slots__ = ("serial", "name", "role", "revoked_unix_ms")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    serial: str
    name: str
    role: str
    revoked_unix_ms: int
    def __init__(self, serial: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., revoked_unix_ms: _Optional[int] = ...) -> None: ...

class ListRevocationsReply(_message.Message):
    __slots__ = ("has_crl", "crl_number", "this_update_unix_ms", "next_update_unix_ms", "revoked")
    HAS_CRL_FIELD_NUMBER: _ClassVar[int]
    CRL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    THIS_UPDATE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_UPDATE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    has_crl: bool
    crl_number: int
    this_update_unix_ms: int
    next_update_unix_ms: int
    revoked: _containers.RepeatedCompositeFieldContainer[RevokedCertificate]
    def __init__(self, has_crl: bool = ..., crl_number: _Optional[int] = ..., this_update_unix_ms: _Optional[int] = ..., next_update_unix_ms: _Optional[int] = ..., revoked: _Optional[_Iterable[_Union[RevokedCertificate, _Mapping]]] = ...) -> None: ...

class AccessCall(_message.Message):
    __slots__ = ("record_id", "payload")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    payload: bytes
    def __init__(self, record_id: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class AccessAnswer(_message.Message):
    __slots__ = ("payload", "unreached")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    UNREACHED_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    unreached: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, payload: _Optional[bytes] = ..., unreached: _Optional[_Iterable[str]] = ...) -> None: ...
