from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("message", "payload", "delay_ms", "fail_code", "responses")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    FAIL_CODE_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    message: str
    payload: bytes
    delay_ms: int
    fail_code: int
    responses: int
    def __init__(self, message: _Optional[str] = ..., payload: _Optional[bytes] = ..., delay_ms: _Optional[int] = ..., fail_code: _Optional[int] = ..., responses: _Optional[int] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("message", "payload", "instance")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    message: str
    payload: bytes
    instance: str
    def __init__(self, message: _Optional[str] = ..., payload: _Optional[bytes] = ..., instance: _Optional[str] = ...) -> None: ...
