"""Generated from pyserving/protos/ssl_config.proto by tools/gen_protos.py. DO NOT EDIT.

Source SHA-256: b4f29f3d40d5722cd35b20bfdebf97ce5e298bc2dd4b00d3815d469a13904695

Version-neutral on purpose: the serialized ``FileDescriptorProto`` below (compiled by
grpcio-tools' protoc) is registered with ``descriptor_pool.Default().AddSerializedFile``
and the message classes are built by ``google.protobuf.internal.builder``, the API that
protoc-generated modules use from protobuf 3.20 to 7.x. protoc's own output for protobuf
>= 5.26 adds a runtime-version check that refuses older runtimes; this module has none,
so it imports with every protobuf that setup.py allows (>= 4.21). See tools/gen_protos.py.
"""

from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf.internal import builder as _builder

__all__ = ['DESCRIPTOR', 'SSLConfig']

_SERIALIZED = (
    b'\n!pyserving/protos/ssl_config.proto\x12\rpyserving.s'
    b'sl"\x8d\x01\n\tSSLConfig\x12\x1d\n\nserver_key\x18\x01 \x01(\tR\tserverKey\x12'
    b'\x1f\n\x0bserver_cert\x18\x02 \x01(\tR\nserverCert\x12\x1b\n\tcustom_ca\x18\x03 '
    b'\x01(\tR\x08customCa\x12#\n\rclient_verify\x18\x04 \x01(\x08R\x0cclientVeri'
    b'fyb\x06proto3'
)

DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(_SERIALIZED)
_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'pyserving.protos.ssl_config_pb2', globals())
