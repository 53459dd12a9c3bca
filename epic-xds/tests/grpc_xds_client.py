"""gRPC's own xDS client (grpcio) resolving xds:///echo through the epic-xds server.

Protocol with the Rust test (tests/grpc_client.rs):
  1. starts a raw-bytes gRPC echo backend on 127.0.0.1:0 and prints "PORT <n>";
  2. waits for one line on stdin (the test has set the snapshot);
  3. calls /epic.test.Echo/Say on xds:///echo (GRPC_XDS_BOOTSTRAP is set by the
     test) and prints "REPLY <text>".
Needs the `grpcio` package; installs nothing.
"""

import sys
from concurrent import futures

import grpc


def say(request, context):
    return b"echo:" + request


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "epic.test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    sys.stdin.readline()
    with grpc.insecure_channel("xds:///echo") as channel:
        call = channel.unary_unary("/epic.test.Echo/Say")
        reply = call(b"hello", timeout=20, wait_for_ready=True)
    print(f"REPLY {reply.decode()}", flush=True)
    server.stop(0)


if __name__ == "__main__":
    main()
