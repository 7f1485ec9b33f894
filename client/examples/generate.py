#!/usr/bin/python3
"""Streams a generation from seqboat-server with Python's grpcio (Debian: python3-grpcio,
protobuf-compiler, protobuf-compiler-grpc). Generates the stubs from proto/ on the fly.

  /usr/bin/python3 client/examples/generate.py [--server 127.0.0.1:50051] "PROMPT"
"""
import argparse
import os
import subprocess
import sys
import tempfile

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def load_stubs():
    out = tempfile.mkdtemp(prefix="seqboat_stubs_")
    subprocess.run(["protoc", "--proto_path=" + PROTO_DIR, "--python_out=" + out, "--grpc_out=" + out,
                    "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", "seqboat/v1/seqboat.proto"], check=True)
    sys.path.insert(0, out)
    from seqboat.v1 import seqboat_pb2, seqboat_pb2_grpc
    return seqboat_pb2, seqboat_pb2_grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prompt")
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--max_new_tokens", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--stop_at_eos", action="store_true", help="end at the model's </s>")
    args = ap.parse_args()
    pb, pb_grpc = load_stubs()
    import grpc

    stub = pb_grpc.SeqBoatStub(grpc.insecure_channel(args.server))
    request = pb.GenerateRequest(text=args.prompt)
    request.sampling.temperature = args.temperature
    request.stopping.max_new_tokens = args.max_new_tokens
    # Byte-level models (the demo one) end every line with </s>: keep writing past it.
    request.stopping.ignore_eos = not args.stop_at_eos
    for response in stub.Generate(request):
        print(response.text, end="", flush=True)
        if response.HasField("finish"):
            print("\n[%s, %d tokens]" % (pb.FinishReason.Name(response.finish.reason),
                                         response.finish.generated_tokens), file=sys.stderr)


if __name__ == "__main__":
    main()
