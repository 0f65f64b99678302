import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNKNOWN: _ClassVar[HealthStatus]
    SERVING: _ClassVar[HealthStatus]
    NOT_SERVING: _ClassVar[HealthStatus]
HEALTH_STATUS_UNKNOWN: HealthStatus
SERVING: HealthStatus
NOT_SERVING: HealthStatus

class Instance(_message.Message):
    __slots__ = ("service", "instance_id", "address", "proto_services", "labels", "health", "owner", "lease_id", "methods", "admin_address")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PROTO_SERVICES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    address: str
    proto_services: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    health: HealthStatus
    owner: str
    lease_id: int
    methods: _containers.RepeatedCompositeFieldContainer[Method]
    admin_address: str
    def __init__(self, service: _Optional[str] = ..., instance_id: _Optional[str] = ..., address: _Optional[str] = ..., proto_services: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., health: _Optional[_Union[HealthStatus, str]] = ..., owner: _Optional[str] = ..., lease_id: _Optional[int] = ..., methods: _Optional[_Iterable[_Union[Method, _Mapping]]] = ..., admin_address: _Optional[str] = ...) -> None: ...

class Method(_message.Message):
    __slots__ = ("path", "client_streaming", "server_streaming", "idempotency_level")
    class IdempotencyLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        IDEMPOTENCY_UNKNOWN: _ClassVar[Method.IdempotencyLevel]
        NO_SIDE_EFFECTS: _ClassVar[Method.IdempotencyLevel]
        IDEMPOTENT: _ClassVar[Method.IdempotencyLevel]
    IDEMPOTENCY_UNKNOWN: Method.IdempotencyLevel
    NO_SIDE_EFFECTS: Method.IdempotencyLevel
    IDEMPOTENT: Method.IdempotencyLevel
    PATH_FIELD_NUMBER: _ClassVar[int]
    CLIENT_STREAMING_FIELD_NUMBER: _ClassVar[int]
    SERVER_STREAMING_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    path: str
    client_streaming: bool
    server_streaming: bool
    idempotency_level: Method.IdempotencyLevel
    def __init__(self, path: _Optional[str] = ..., client_streaming: _Optional[bool] = ..., server_streaming: _Optional[bool] = ..., idempotency_level: _Optional[_Union[Method.IdempotencyLevel, str]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("instance", "ttl_seconds")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    instance: Instance
    ttl_seconds: int
    def __init__(self, instance: _Optional[_Union[Instance, _Mapping]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("lease_id", "ttl_seconds", "revision")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    ttl_seconds: int
    revision: int
    def __init__(self, lease_id: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class KeepAliveRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    def __init__(self, lease_id: _Optional[int] = ...) -> None: ...

class KeepAliveResponse(_message.Message):
    __slots__ = ("ttl_seconds",)
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: int
    def __init__(self, ttl_seconds: _Optional[int] = ...) -> None: ...

class SetHealthRequest(_message.Message):
    __slots__ = ("lease_id", "health")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    health: HealthStatus
    def __init__(self, lease_id: _Optional[int] = ..., health: _Optional[_Union[HealthStatus, str]] = ...) -> None: ...

class SetHealthResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class DeregisterRequest(_message.Message):
    __slots__ = ("service", "instance_id", "owner")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    owner: str
    def __init__(self, service: _Optional[str] = ..., instance_id: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class DeregisterResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("service", "proto_service")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROTO_SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    proto_service: str
    def __init__(self, service: _Optional[str] = ..., proto_service: _Optional[str] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("instances", "revision")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    revision: int
    def __init__(self, instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceSummary(_message.Message):
    __slots__ = ("service", "proto_services", "instances", "serving")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROTO_SERVICES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    service: str
    proto_services: _containers.RepeatedScalarFieldContainer[str]
    instances: int
    serving: int
    def __init__(self, service: _Optional[str] = ..., proto_services: _Optional[_Iterable[str]] = ..., instances: _Optional[int] = ..., serving: _Optional[int] = ...) -> None: ...

class ListServicesResponse(_message.Message):
    __slots__ = ("services", "revision")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceSummary]
    revision: int
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceSummary, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("service", "proto_service", "include_config", "store_id", "after_revision")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROTO_SERVICE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_REVISION_FIELD_NUMBER: _ClassVar[int]
    service: str
    proto_service: str
    include_config: bool
    store_id: str
    after_revision: int
    def __init__(self, service: _Optional[str] = ..., proto_service: _Optional[str] = ..., include_config: _Optional[bool] = ..., store_id: _Optional[str] = ..., after_revision: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "revision", "instances", "reason", "partial", "more", "config", "store_id")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNKNOWN: _ClassVar[WatchEvent.Type]
        SNAPSHOT: _ClassVar[WatchEvent.Type]
        UPSERT: _ClassVar[WatchEvent.Type]
        DELETE: _ClassVar[WatchEvent.Type]
        CONFIG: _ClassVar[WatchEvent.Type]
        RESUMED: _ClassVar[WatchEvent.Type]
    TYPE_UNKNOWN: WatchEvent.Type
    SNAPSHOT: WatchEvent.Type
    UPSERT: WatchEvent.Type
    DELETE: WatchEvent.Type
    CONFIG: WatchEvent.Type
    RESUMED: WatchEvent.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    type: WatchEvent.Type
    revision: int
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    reason: str
    partial: bool
    more: bool
    config: AppliedConfig
    store_id: str
    def __init__(self, type: _Optional[_Union[WatchEvent.Type, str]] = ..., revision: _Optional[int] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., reason: _Optional[str] = ..., partial: _Optional[bool] = ..., more: _Optional[bool] = ..., config: _Optional[_Union[AppliedConfig, _Mapping]] = ..., store_id: _Optional[str] = ...) -> None: ...

class AppliedConfig(_message.Message):
    __slots__ = ("version", "canonical_json", "applied_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_JSON_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    version: int
    canonical_json: str
    applied_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[int] = ..., canonical_json: _Optional[str] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApplyConfigRequest(_message.Message):
    __slots__ = ("text", "source")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    text: bytes
    source: str
    def __init__(self, text: _Optional[bytes] = ..., source: _Optional[str] = ...) -> None: ...

class ApplyConfigResponse(_message.Message):
    __slots__ = ("config", "changed", "warnings")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    config: AppliedConfig
    changed: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, config: _Optional[_Union[AppliedConfig, _Mapping]] = ..., changed: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: AppliedConfig
    def __init__(self, config: _Optional[_Union[AppliedConfig, _Mapping]] = ...) -> None: ...
