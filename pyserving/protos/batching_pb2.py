"""Generated from pyserving/protos/batching.proto by tools/gen_protos.py. DO NOT EDIT.

Source SHA-256: 28635c63eb2295ac0820f21b484a09df8b4791f7132ff5b18f95a039f1b28dab

Version-neutral on purpose: the serialized ``FileDescriptorProto`` below (compiled by
grpcio-tools' protoc) is registered with ``descriptor_pool.Default().AddSerializedFile``
and the message classes are built by ``google.protobuf.internal.builder``, the API that
protoc-generated modules use from protobuf 3.20 to 7.x. protoc's own output for protobuf
>= 5.26 adds a runtime-version check that refuses older runtimes; this module has none,
so it imports with every protobuf that setup.py allows (>= 4.21). See tools/gen_protos.py.
"""

from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf.internal import builder as _builder
from google.protobuf import wrappers_pb2 as _wrappers_pb2  # noqa: F401 (registers google/protobuf/wrappers.proto)

__all__ = ['DESCRIPTOR', 'BatchingParameters']

_SERIALIZED = (
    b'\n\x1fpyserving/protos/batching.proto\x12\x12pyserving.bat'
    b'ching\x1a\x1egoogle/protobuf/wrappers.proto"\xa6\x05\n\x12Batchi'
    b'ngParameters\x12A\n\x0emax_batch_size\x18\x01 \x01(\x0b2\x1b.google.pr'
    b'otobuf.Int64ValueR\x0cmaxBatchSize\x12M\n\x14batch_timeout'
    b'_micros\x18\x02 \x01(\x0b2\x1b.google.protobuf.Int64ValueR\x12batc'
    b'hTimeoutMicros\x12M\n\x14max_enqueued_batches\x18\x03 \x01(\x0b2\x1b.g'
    b'oogle.protobuf.Int64ValueR\x12maxEnqueuedBatches\x12G\n'
    b'\x11num_batch_threads\x18\x04 \x01(\x0b2\x1b.google.protobuf.Int64'
    b'ValueR\x0fnumBatchThreads\x12F\n\x10thread_pool_name\x18\x05 \x01(\x0b'
    b'2\x1c.google.protobuf.StringValueR\x0ethreadPoolName\x12.'
    b'\n\x13allowed_batch_sizes\x18\x06 \x03(\x03R\x11allowedBatchSizes\x12;'
    b'\n\x1apad_variable_length_inputs\x18\x07 \x01(\x08R\x17padVariableL'
    b'engthInputs\x12[\n\x1cenable_large_batch_splitting\x18\x08 \x01('
    b'\x0b2\x1a.google.protobuf.BoolValueR\x19enableLargeBatchS'
    b'plitting\x12T\n\x18max_execution_batch_size\x18\t \x01(\x0b2\x1b.goo'
    b'gle.protobuf.Int64ValueR\x15maxExecutionBatchSizeb\x06'
    b'proto3'
)

DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(_SERIALIZED)
_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'pyserving.protos.batching_pb2', globals())
