"""Generated from pyserving/protos/monitoring.proto by tools/gen_protos.py. DO NOT EDIT.

Source SHA-256: 4869387847d6180ee4104e9f8c3c615df732c8d1299dd06fdd6ec97629b8792a

Version-neutral on purpose: the serialized ``FileDescriptorProto`` below (compiled by
grpcio-tools' protoc) is registered with ``descriptor_pool.Default().AddSerializedFile``
and the message classes are built by ``google.protobuf.internal.builder``, the API that
protoc-generated modules use from protobuf 3.20 to 7.x. protoc's own output for protobuf
>= 5.26 adds a runtime-version check that refuses older runtimes; this module has none,
so it imports with every protobuf that setup.py allows (>= 4.21). See tools/gen_protos.py.
"""

from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf.internal import builder as _builder

__all__ = ['DESCRIPTOR', 'MonitoringConfig', 'PrometheusConfig']

_SERIALIZED = (
    b'\n!pyserving/protos/monitoring.proto\x12\x14pyserving.m'
    b'onitoring"g\n\x10MonitoringConfig\x12S\n\x11prometheus_conf'
    b'ig\x18\x01 \x01(\x0b2&.pyserving.monitoring.PrometheusConfig'
    b'R\x10prometheusConfig">\n\x10PrometheusConfig\x12\x16\n\x06enable'
    b'\x18\x01 \x01(\x08R\x06enable\x12\x12\n\x04path\x18\x02 \x01(\tR\x04pathb\x06proto3'
)

DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(_SERIALIZED)
_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'pyserving.protos.monitoring_pb2', globals())
