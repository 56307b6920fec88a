from protos.scifed.v1 import federation_pb2 as _federation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("path", "meta_yaml", "meta_name", "dataset_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    META_YAML_FIELD_NUMBER: _ClassVar[int]
    META_NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    meta_yaml: str
    meta_name: str
    dataset_id: str
    def __init__(self, path: _Optional[str] = ..., meta_yaml: _Optional[str] = ..., meta_name: _Optional[str] = ..., dataset_id: _Optional[str] = ...) -> None: ...

class UpdateDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "meta_yaml", "meta_name", "refresh_data")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    META_YAML_FIELD_NUMBER: _ClassVar[int]
    META_NAME_FIELD_NUMBER: _ClassVar[int]
    REFRESH_DATA_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    meta_yaml: str
    meta_name: str
    refresh_data: bool
    def __init__(self, dataset_id: _Optional[str] = ..., meta_yaml: _Optional[str] = ..., meta_name: _Optional[str] = ..., refresh_data: bool = ...) -> None: ...

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
