from protos.scifed.v1 import federation_pb2 as _federation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QualityOverride(_message.Message):
    __slots__ = ("metric", "justification")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    metric: str
    justification: str
    def __init__(self, metric: _Optional[str] = ..., justification: _Optional[str] = ...) -> None: ...

class QualityRequest(_message.Message):
    __slots__ = ("dataset_id", "fast", "overrides")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    FAST_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    fast: bool
    overrides: _containers.RepeatedCompositeFieldContainer[QualityOverride]
    def __init__(self, dataset_id: _Optional[str] = ..., fast: bool = ..., overrides: _Optional[_Iterable[_Union[QualityOverride, _Mapping]]] = ...) -> None: ...

class QualityProgress(_message.Message):
    __slots__ = ("step", "report_json")
    STEP_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    step: str
    report_json: str
    def __init__(self, step: _Optional[str] = ..., report_json: _Optional[str] = ...) -> None: ...

class ExportCatalogRequest(_message.Message):
    __slots__ = ("format",)
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    format: str
    def __init__(self, format: _Optional[str] = ...) -> None: ...

class JsonReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class PolicySetRequest(_message.Message):
    __slots__ = ("dataset_id", "yaml", "source", "reset", "justification")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    yaml: str
    source: str
    reset: bool
    justification: str
    def __init__(self, dataset_id: _Optional[str] = ..., yaml: _Optional[str] = ..., source: _Optional[str] = ..., reset: bool = ..., justification: _Optional[str] = ...) -> None: ...

class ApprovalsListRequest(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: str
    def __init__(self, state: _Optional[str] = ...) -> None: ...

class ApprovalRef(_message.Message):
    __slots__ = ("approval_id",)
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    def __init__(self, approval_id: _Optional[str] = ...) -> None: ...

class ApprovalDecision(_message.Message):
    __slots__ = ("approval_id", "approve", "reason", "by", "expires_unix_ms", "statement", "signature")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    approve: bool
    reason: str
    by: str
    expires_unix_ms: int
    statement: str
    signature: bytes
    def __init__(self, approval_id: _Optional[str] = ..., approve: bool = ..., reason: _Optional[str] = ..., by: _Optional[str] = ..., expires_unix_ms: _Optional[int] = ..., statement: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Countersignature(_message.Message):
    __slots__ = ("by", "statement", "signature")
    BY_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    by: str
    statement: str
    signature: bytes
    def __init__(self, by: _Optional[str] = ..., statement: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ApproverAddRequest(_message.Message):
    __slots__ = ("name", "role", "public_key_pem", "countersignatures")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    COUNTERSIGNATURES_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    public_key_pem: str
    countersignatures: _containers.RepeatedCompositeFieldContainer[Countersignature]
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., public_key_pem: _Optional[str] = ..., countersignatures: _Optional[_Iterable[_Union[Countersignature, _Mapping]]] = ...) -> None: ...

class ApproverListRequest(_message.Message):
    __slots__ = ("include_removed",)
    INCLUDE_REMOVED_FIELD_NUMBER: _ClassVar[int]
    include_removed: bool
    def __init__(self, include_removed: bool = ...) -> None: ...

class ApproverRemoveRequest(_message.Message):
    __slots__ = ("name", "countersignatures")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNTERSIGNATURES_FIELD_NUMBER: _ClassVar[int]
    name: str
    countersignatures: _containers.RepeatedCompositeFieldContainer[Countersignature]
    def __init__(self, name: _Optional[str] = ..., countersignatures: _Optional[_Iterable[_Union[Countersignature, _Mapping]]] = ...) -> None: ...

class ApproverRegistryStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BudgetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class AlertsListRequest(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: str
    def __init__(self, state: _Optional[str] = ...) -> None: ...

class AuditListRequest(_message.Message):
    __slots__ = ("since_seq", "limit")
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    since_seq: int
    limit: int
    def __init__(self, since_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditVerifyRequest(_message.Message):
    __slots__ = ("against_coordinator",)
    AGAINST_COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    against_coordinator: bool
    def __init__(self, against_coordinator: bool = ...) -> None: ...

class AuditExportRequest(_message.Message):
    __slots__ = ("format",)
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    format: str
    def __init__(self, format: _Optional[str] = ...) -> None: ...

class ListStudiesLocalRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("node_name", "platform", "coordinator", "connected", "last_contact_unix_ms", "datasets", "published")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_CONTACT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    platform: str
    coordinator: str
    connected: bool
    last_contact_unix_ms: int
    datasets: int
    published: int
    def __init__(self, node_name: _Optional[str] = ..., platform: _Optional[str] = ..., coordinator: _Optional[str] = ..., connected: bool = ..., last_contact_unix_ms: _Optional[int] = ..., datasets: _Optional[int] = ..., published: _Optional[int] = ...) -> None: ...

class AddDatasetRequest(_message.Message):
    __slots__ = ("path", "meta_yaml", "meta_name", "dataset_id", "accept_violations")
    PATH_FIELD_NUMBER: _ClassVar[int]
    META_YAML_FIELD_NUMBER: _ClassVar[int]
    META_NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    path: str
    meta_yaml: str
    meta_name: str
    dataset_id: str
    accept_violations: bool
    def __init__(self, path: _Optional[str] = ..., meta_yaml: _Optional[str] = ..., meta_name: _Optional[str] = ..., dataset_id: _Optional[str] = ..., accept_violations: bool = ...) -> None: ...

class UpdateDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "meta_yaml", "meta_name", "refresh_data", "accept_violations")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    META_YAML_FIELD_NUMBER: _ClassVar[int]
    META_NAME_FIELD_NUMBER: _ClassVar[int]
    REFRESH_DATA_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    meta_yaml: str
    meta_name: str
    refresh_data: bool
    accept_violations: bool
    def __init__(self, dataset_id: _Optional[str] = ..., meta_yaml: _Optional[str] = ..., meta_name: _Optional[str] = ..., refresh_data: bool = ..., accept_violations: bool = ...) -> None: ...

class DatasetRef(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class DatasetSummary(_message.Message):
    __slots__ = ("dataset_id", "title", "grade", "category", "record_count", "publication", "path")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    GRADE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    PUBLICATION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    title: str
    grade: str
    category: str
    record_count: int
    publication: str
    path: str
    def __init__(self, dataset_id: _Optional[str] = ..., title: _Optional[str] = ..., grade: _Optional[str] = ..., category: _Optional[str] = ..., record_count: _Optional[int] = ..., publication: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class DatasetReply(_message.Message):
    __slots__ = ("summary", "record_json")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    summary: DatasetSummary
    record_json: str
    def __init__(self, summary: _Optional[_Union[DatasetSummary, _Mapping]] = ..., record_json: _Optional[str] = ...) -> None: ...

class RemoveDatasetReply(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsReply(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetSummary]
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetSummary, _Mapping]]] = ...) -> None: ...

class AccessListRequest(_message.Message):
    __slots__ = ("state", "deliveries")
    STATE_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    state: str
    deliveries: bool
    def __init__(self, state: _Optional[str] = ..., deliveries: bool = ...) -> None: ...

class AccessRef(_message.Message):
    __slots__ = ("grant_id",)
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    def __init__(self, grant_id: _Optional[str] = ...) -> None: ...

class AccessRevokeRequest(_message.Message):
    __slots__ = ("grant_id", "reason")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    reason: str
    def __init__(self, grant_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AccessExpireRequest(_message.Message):
    __slots__ = ("grant_id", "expires_unix_ms", "reason")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    expires_unix_ms: int
    reason: str
    def __init__(self, grant_id: _Optional[str] = ..., expires_unix_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class AccessOfflineRequest(_message.Message):
    __slots__ = ("dataset_id", "recipient", "what", "sha256", "medium", "by", "statement", "signature")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MEDIUM_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    recipient: str
    what: str
    sha256: str
    medium: str
    by: str
    statement: str
    signature: bytes
    def __init__(self, dataset_id: _Optional[str] = ..., recipient: _Optional[str] = ..., what: _Optional[str] = ..., sha256: _Optional[str] = ..., medium: _Optional[str] = ..., by: _Optional[str] = ..., statement: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ReviewListRequest(_message.Message):
    __slots__ = ("state", "full")
    STATE_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    state: str
    full: bool
    def __init__(self, state: _Optional[str] = ..., full: bool = ...) -> None: ...

class ReviewRef(_message.Message):
    __slots__ = ("review_id",)
    REVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    review_id: str
    def __init__(self, review_id: _Optional[str] = ...) -> None: ...

class ReviewDecision(_message.Message):
    __slots__ = ("review_id", "release", "reason", "by", "statement", "signature")
    REVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    review_id: str
    release: bool
    reason: str
    by: str
    statement: str
    signature: bytes
    def __init__(self, review_id: _Optional[str] = ..., release: bool = ..., reason: _Optional[str] = ..., by: _Optional[str] = ..., statement: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...
