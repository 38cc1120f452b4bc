"""Generated from pyserving/protos/routing.proto by tools/gen_protos.py. DO NOT EDIT.

Source SHA-256: 45ab927ab8ae65066b8272bae19b7d8e35895fe31e514bee8b82ff1a16b270f3

Version-neutral on purpose: the serialized ``FileDescriptorProto`` below (compiled by
grpcio-tools' protoc) is registered with ``descriptor_pool.Default().AddSerializedFile``
and the message classes are built by ``google.protobuf.internal.builder``, the API that
protoc-generated modules use from protobuf 3.20 to 7.x. protoc's own output for protobuf
>= 5.26 adds a runtime-version check that refuses older runtimes; this module has none,
so it imports with every protobuf that setup.py allows (>= 4.21). See tools/gen_protos.py.
"""

from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf.internal import builder as _builder

__all__ = ['DESCRIPTOR', 'RoutingConfig', 'Route', 'Arm', 'HeaderRule', 'Shadow']

_SERIALIZED = (
    b'\n\x1epyserving/protos/routing.proto\x12\tpyserving"9\n\rR'
    b'outingConfig\x12(\n\x06routes\x18\x01 \x03(\x0b2\x10.pyserving.RouteR\x06'
    b'routes"\xb8\x01\n\x05Route\x12\x12\n\x04name\x18\x01 \x01(\tR\x04name\x12\x1f\n\x0bsegment_'
    b'key\x18\x02 \x01(\tR\nsegmentKey\x12"\n\x04arms\x18\x03 \x03(\x0b2\x0e.pyserving.'
    b'ArmR\x04arms\x12+\n\x05rules\x18\x04 \x03(\x0b2\x15.pyserving.HeaderRuleR'
    b'\x05rules\x12)\n\x06shadow\x18\x05 \x01(\x0b2\x11.pyserving.ShadowR\x06shado'
    b'w"\xb5\x01\n\x03Arm\x12\x12\n\x04name\x18\x01 \x01(\tR\x04name\x12\x1d\n\nmodel_name\x18\x02 \x01('
    b'\tR\tmodelName\x12\x1b\n\x06weight\x18\x03 \x01(\x01H\x01R\x06weight\x88\x01\x01\x12\x1a\n\x07ver'
    b'sion\x18\x04 \x01(\x03H\x00R\x07version\x12%\n\rversion_label\x18\x05 \x01(\tH\x00R\x0c'
    b'versionLabelB\x10\n\x0eversion_choiceB\t\n\x07_weight"N\n\nHea'
    b'derRule\x12\x16\n\x06header\x18\x01 \x01(\tR\x06header\x12\x16\n\x06equals\x18\x02 \x01(\tR'
    b'\x06equals\x12\x10\n\x03arm\x18\x03 \x01(\tR\x03arm"\xa7\x01\n\x06Shadow\x12\x1d\n\nmodel_na'
    b'me\x18\x01 \x01(\tR\tmodelName\x12\x1d\n\x07percent\x18\x02 \x01(\x01H\x01R\x07percent\x88'
    b'\x01\x01\x12\x1a\n\x07version\x18\x03 \x01(\x03H\x00R\x07version\x12%\n\rversion_label\x18'
    b'\x04 \x01(\tH\x00R\x0cversionLabelB\x10\n\x0eversion_choiceB\n\n\x08_perc'
    b'entb\x06proto3'
)

DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(_SERIALIZED)
_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'pyserving.protos.routing_pb2', globals())
