"""The wire protocol of the edge server: protobuf messages and one gRPC service, defined in Python.

The messages are declared here as a `FileDescriptorProto` (what `protoc` would build from a .proto
file) and made into classes by protobuf's own `message_factory`, so there is no generated
`*_pb2.py` to keep current and no protoc step: this module is the one definition, and it reads like
the .proto it stands for:

  package stae_jax.serving;

  message ClassifyRequest {
    string method = 1;              // a method tag the server lists (Health), e.g. "stae", "h264"
    string point = 2;               // one of its operating points by name, e.g. "keep=0.25x0.5"
    string request_id = 3;          // chosen by the client; a retry with the same id is the same
                                    // request (answered once, counted once)
    double deadline_unix_seconds = 4;  // answer "late" (no compute spent) if not started by then;
                                       // 0: no deadline
    bytes stream = 5;               // one clip's bitstream, as the method's device half made it
    string fingerprint = 6;         // the device's model (Codec.fingerprint()); "" where none
  }
  message ClassifyReply {
    string request_id = 1;
    Status status = 2;              // OK, LATE or ERROR
    string error = 3;               // what was wrong with the request (ERROR), or why it was late
    int32 label = 4;                // argmax of the logits (OK)
    repeated float logits = 5;
    double queue_seconds = 6;       // accepted -> its batch started
    double decode_seconds = 7;      // the batch's entropy_decode + decode
    double classify_seconds = 8;    // the batch's classify
    int32 batch_size = 9;           // requests in its batch (before padding)
    int32 padded_size = 10;         // the fixed batch shape it ran at
    enum Status { OK = 0; LATE = 1; ERROR = 2; }
  }
  message HealthRequest {}
  message MethodInfo { string method = 1; string label = 2; repeated string points = 3;
                       string fingerprint = 4; int64 max_request_bytes = 5; }
  message HealthReply { bool live = 1; bool ready = 2; bool draining = 3;
                        repeated MethodInfo methods = 4; int32 max_batch = 5; }
  message MetricsRequest {}
  message MetricsReply { string text = 1; }  // Prometheus text exposition format

  service EdgeServer {
    rpc Classify (ClassifyRequest) returns (ClassifyReply);
    rpc Health (HealthRequest) returns (HealthReply);    // liveness + readiness + what it serves
    rpc Metrics (MetricsRequest) returns (MetricsReply);
  }

Service methods are registered with gRPC's generic handlers (`grpc.method_handlers_generic_handler`)
and called with `channel.unary_unary(path, ...)`, using the classes' own SerializeToString /
FromString, which is all a generated stub does.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory

PACKAGE = "stae_jax.serving"
SERVICE = f"{PACKAGE}.EdgeServer"

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {"string": _F.TYPE_STRING, "double": _F.TYPE_DOUBLE, "bytes": _F.TYPE_BYTES,
          "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "float": _F.TYPE_FLOAT,
          "bool": _F.TYPE_BOOL}

#: message name -> fields (name, number, type, repeated); "." types name another message or enum.
_MESSAGES = {
    "ClassifyRequest": [("method", 1, "string", False), ("point", 2, "string", False),
                        ("request_id", 3, "string", False),
                        ("deadline_unix_seconds", 4, "double", False),
                        ("stream", 5, "bytes", False), ("fingerprint", 6, "string", False)],
    "ClassifyReply": [("request_id", 1, "string", False),
                      ("status", 2, ".ClassifyReply.Status", False),
                      ("error", 3, "string", False), ("label", 4, "int32", False),
                      ("logits", 5, "float", True), ("queue_seconds", 6, "double", False),
                      ("decode_seconds", 7, "double", False),
                      ("classify_seconds", 8, "double", False), ("batch_size", 9, "int32", False),
                      ("padded_size", 10, "int32", False)],
    "HealthRequest": [],
    "MethodInfo": [("method", 1, "string", False), ("label", 2, "string", False),
                   ("points", 3, "string", True), ("fingerprint", 4, "string", False),
                   ("max_request_bytes", 5, "int64", False)],
    "HealthReply": [("live", 1, "bool", False), ("ready", 2, "bool", False),
                    ("draining", 3, "bool", False), ("methods", 4, ".MethodInfo", True),
                    ("max_batch", 5, "int32", False)],
    "MetricsRequest": [],
    "MetricsReply": [("text", 1, "string", False)],
}
_ENUMS = {"ClassifyReply": ("Status", ("OK", "LATE", "ERROR"))}
#: rpc name -> (request message, reply message)
RPCS = {"Classify": ("ClassifyRequest", "ClassifyReply"),
        "Health": ("HealthRequest", "HealthReply"),
        "Metrics": ("MetricsRequest", "MetricsReply")}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
  proto = descriptor_pb2.FileDescriptorProto(name="stae_jax/serving/edge.proto", package=PACKAGE,
                                             syntax="proto3")
  for name, fields in _MESSAGES.items():
    message = proto.message_type.add(name=name)
    for field_name, number, kind, repeated in fields:
      field = message.field.add(name=field_name, number=number,
                                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
      if kind.startswith("."):
        target = kind[1:]
        field.type_name = f".{PACKAGE}.{target}"
        field.type = _F.TYPE_ENUM if target.split(".")[-1] in {
            e for e, _ in _ENUMS.values()} else _F.TYPE_MESSAGE
      else:
        field.type = _TYPES[kind]
    if name in _ENUMS:
      enum_name, values = _ENUMS[name]
      enum = message.enum_type.add(name=enum_name)
      for number, value in enumerate(values):
        enum.value.add(name=value, number=number)
  service = proto.service.add(name=SERVICE.rsplit(".", 1)[1])
  for rpc, (request, reply) in RPCS.items():
    service.method.add(name=rpc, input_type=f".{PACKAGE}.{request}",
                       output_type=f".{PACKAGE}.{reply}")
  return proto


_POOL = descriptor_pool.DescriptorPool()
_FILE = _POOL.Add(_file_descriptor())
_CLASSES = {name: message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in _MESSAGES}

ClassifyRequest = _CLASSES["ClassifyRequest"]
ClassifyReply = _CLASSES["ClassifyReply"]
HealthRequest = _CLASSES["HealthRequest"]
HealthReply = _CLASSES["HealthReply"]
MethodInfo = _CLASSES["MethodInfo"]
MetricsRequest = _CLASSES["MetricsRequest"]
MetricsReply = _CLASSES["MetricsReply"]

OK = ClassifyReply.OK
LATE = ClassifyReply.LATE
ERROR = ClassifyReply.ERROR
STATUS_NAMES = {OK: "ok", LATE: "late", ERROR: "error"}

#: Bytes a ClassifyRequest adds around its stream (ids, names, varint lengths), generously.
REQUEST_OVERHEAD_BYTES = 4096


def path(rpc: str) -> str:
  """The gRPC method path of `rpc`, e.g. "/stae_jax.serving.EdgeServer/Classify"."""
  return f"/{SERVICE}/{rpc}"


def classes(rpc: str):
  """(request class, reply class) of `rpc`."""
  request, reply = RPCS[rpc]
  return _CLASSES[request], _CLASSES[reply]


class Stub:
  """A client of the EdgeServer service on a `grpc.Channel` (or `grpc.aio.Channel`): one callable
  per rpc, e.g. `Stub(channel).Classify(request, timeout=1.0)`, with `.future(...)` on a
  synchronous channel."""

  def __init__(self, channel):
    for rpc in RPCS:
      request, reply = classes(rpc)
      setattr(self, rpc, channel.unary_unary(
          path(rpc), request_serializer=request.SerializeToString,
          response_deserializer=reply.FromString))
