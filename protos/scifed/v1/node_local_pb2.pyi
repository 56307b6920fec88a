from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckAppRequest(_message.Message):
    __slots__ = ("fab", "run_id", "job_id")
    FAB_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    fab: bytes
    run_id: int
    job_id: str
    def __init__(self, fab: _Optional[bytes] = ..., run_id: _Optional[int] = ..., job_id: _Optional[str] = ...) -> None: ...

class CheckAppReply(_message.Message):
    __slots__ = ("trusted", "sha256", "client_app", "reason")
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CLIENT_APP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    trusted: bool
    sha256: str
    client_app: str
    reason: str
    def __init__(self, trusted: bool = ..., sha256: _Optional[str] = ..., client_app: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TrainingGrantRequest(_message.Message):
    __slots__ = ("job_id", "study_id", "key_version", "dataset", "spec_json", "filter", "round", "n_nodes", "researcher", "researcher_claim_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    N_NODES_FIELD_NUMBER: _ClassVar[int]
    RESEARCHER_FIELD_NUMBER: _ClassVar[int]
    RESEARCHER_CLAIM_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    study_id: str
    key_version: int
    dataset: str
    spec_json: str
    filter: str
    round: int
    n_nodes: int
    researcher: str
    researcher_claim_json: str
    def __init__(self, job_id: _Optional[str] = ..., study_id: _Optional[str] = ..., key_version: _Optional[int] = ..., dataset: _Optional[str] = ..., spec_json: _Optional[str] = ..., filter: _Optional[str] = ..., round: _Optional[int] = ..., n_nodes: _Optional[int] = ..., researcher: _Optional[str] = ..., researcher_claim_json: _Optional[str] = ...) -> None: ...

class DpSettings(_message.Message):
    __slots__ = ("enabled", "epsilon", "delta", "max_grad_norm")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    epsilon: float
    delta: float
    max_grad_norm: float
    def __init__(self, enabled: bool = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., max_grad_norm: _Optional[float] = ...) -> None: ...

class AccountantStep(_message.Message):
    __slots__ = ("noise_multiplier", "sample_rate", "steps")
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    noise_multiplier: float
    sample_rate: float
    steps: int
    def __init__(self, noise_multiplier: _Optional[float] = ..., sample_rate: _Optional[float] = ..., steps: _Optional[int] = ...) -> None: ...

class TrainingGrantReply(_message.Message):
    __slots__ = ("allowed", "reason", "features", "labels", "dp", "study_key", "key_version", "node_name", "dp_history", "sealed_reason")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DP_FIELD_NUMBER: _ClassVar[int]
    STUDY_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    DP_HISTORY_FIELD_NUMBER: _ClassVar[int]
    SEALED_REASON_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    features: bytes
    labels: bytes
    dp: DpSettings
    study_key: bytes
    key_version: int
    node_name: str
    dp_history: _containers.RepeatedCompositeFieldContainer[AccountantStep]
    sealed_reason: bytes
    def __init__(self, allowed: bool = ..., reason: _Optional[str] = ..., features: _Optional[bytes] = ..., labels: _Optional[bytes] = ..., dp: _Optional[_Union[DpSettings, _Mapping]] = ..., study_key: _Optional[bytes] = ..., key_version: _Optional[int] = ..., node_name: _Optional[str] = ..., dp_history: _Optional[_Iterable[_Union[AccountantStep, _Mapping]]] = ..., sealed_reason: _Optional[bytes] = ...) -> None: ...

class ReportTrainingRequest(_message.Message):
    __slots__ = ("job_id", "dataset", "round", "examples", "epsilon_spent", "delta", "dp_history")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DP_HISTORY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    dataset: str
    round: int
    examples: int
    epsilon_spent: float
    delta: float
    dp_history: _containers.RepeatedCompositeFieldContainer[AccountantStep]
    def __init__(self, job_id: _Optional[str] = ..., dataset: _Optional[str] = ..., round: _Optional[int] = ..., examples: _Optional[int] = ..., epsilon_spent: _Optional[float] = ..., delta: _Optional[float] = ..., dp_history: _Optional[_Iterable[_Union[AccountantStep, _Mapping]]] = ...) -> None: ...

class ReportTrainingReply(_message.Message):
    __slots__ = ("epsilon_spent",)
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    epsilon_spent: float
    def __init__(self, epsilon_spent: _Optional[float] = ...) -> None: ...

class UpdateVector(_message.Message):
    __slots__ = ("name", "values", "bound", "capacity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: bytes
    bound: float
    capacity: int
    def __init__(self, name: _Optional[str] = ..., values: _Optional[bytes] = ..., bound: _Optional[float] = ..., capacity: _Optional[int] = ...) -> None: ...

class SealUpdateRequest(_message.Message):
    __slots__ = ("grant", "stage", "attempt", "masking_json", "vectors", "trained_from")
    GRANT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MASKING_JSON_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FROM_FIELD_NUMBER: _ClassVar[int]
    grant: TrainingGrantRequest
    stage: str
    attempt: int
    masking_json: str
    vectors: _containers.RepeatedCompositeFieldContainer[UpdateVector]
    trained_from: str
    def __init__(self, grant: _Optional[_Union[TrainingGrantRequest, _Mapping]] = ..., stage: _Optional[str] = ..., attempt: _Optional[int] = ..., masking_json: _Optional[str] = ..., vectors: _Optional[_Iterable[_Union[UpdateVector, _Mapping]]] = ..., trained_from: _Optional[str] = ...) -> None: ...

class SealUpdateReply(_message.Message):
    __slots__ = ("sealed", "ciphertexts", "attestation_json", "refused", "sealed_reason", "shares")
    class CiphertextsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class SharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    SEALED_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_JSON_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    SEALED_REASON_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    sealed: bool
    ciphertexts: _containers.ScalarMap[str, bytes]
    attestation_json: str
    refused: str
    sealed_reason: bytes
    shares: _containers.ScalarMap[str, bytes]
    def __init__(self, sealed: bool = ..., ciphertexts: _Optional[_Mapping[str, bytes]] = ..., attestation_json: _Optional[str] = ..., refused: _Optional[str] = ..., sealed_reason: _Optional[bytes] = ..., shares: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class RevealMaskRequest(_message.Message):
    __slots__ = ("grant", "stage", "attempt", "contributors", "dropped", "shares", "masking_json")
    class SharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    GRANT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    MASKING_JSON_FIELD_NUMBER: _ClassVar[int]
    grant: TrainingGrantRequest
    stage: str
    attempt: int
    contributors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    shares: _containers.ScalarMap[str, bytes]
    masking_json: str
    def __init__(self, grant: _Optional[_Union[TrainingGrantRequest, _Mapping]] = ..., stage: _Optional[str] = ..., attempt: _Optional[int] = ..., contributors: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ..., shares: _Optional[_Mapping[str, bytes]] = ..., masking_json: _Optional[str] = ...) -> None: ...

class RevealMaskReply(_message.Message):
    __slots__ = ("seed", "refused", "sealed_reason", "view", "answer_json")
    SEED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    SEALED_REASON_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    ANSWER_JSON_FIELD_NUMBER: _ClassVar[int]
    seed: bytes
    refused: str
    sealed_reason: bytes
    view: bytes
    answer_json: str
    def __init__(self, seed: _Optional[bytes] = ..., refused: _Optional[str] = ..., sealed_reason: _Optional[bytes] = ..., view: _Optional[bytes] = ..., answer_json: _Optional[str] = ...) -> None: ...
