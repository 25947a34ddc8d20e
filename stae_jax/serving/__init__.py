"""Edge offloading over a real network: the edge server, the device client, the shaped link.

  protocol  the gRPC service and its protobuf messages (built from descriptors; no protoc step)
  server    the edge server: validation, dynamic batching, idempotent answers, metrics, shutdown
  client    the device client: cameras at a fixed capture rate, the adaptive policy, records
  sources   clips for the cameras (the test split or video files)
  link      a network namespace pair whose tbf rate follows a channel trace

Entry scripts: serve.py and client.py at the repository root; benchmarks/serve_load.py.
"""
