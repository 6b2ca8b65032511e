"""Container healthcheck of the prediction server: the standard gRPC health service
answers SERVING (a model is loaded). Exit 0 healthy, 1 not."""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
try:
    status = health_pb2_grpc.HealthStub(grpc.insecure_channel(target)).Check(
        health_pb2.HealthCheckRequest(), timeout=3).status
except grpc.RpcError as exc:
    print(f"{target}: {exc.code().name}", file=sys.stderr)
    sys.exit(1)
print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
sys.exit(0 if status == health_pb2.HealthCheckResponse.SERVING else 1)
