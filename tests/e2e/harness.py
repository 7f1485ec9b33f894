"""End-to-end test harness: real seqboat-server processes on 127.0.0.1 with ephemeral ports,
Python gRPC stubs generated from our proto with Debian's protoc and gRPC's Python plugin."""
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BIN_DIR = os.environ.get("SEQBOAT_BIN_DIR", os.path.join(HERE, "..", "..", "build", "bin"))
FIXTURES = os.environ.get("SEQBOAT_FIXTURES_DIR", os.path.join(HERE, "..", "fixtures"))
PROTO_DIR = os.environ.get("SEQBOAT_PROTO_DIR", os.path.join(HERE, "..", "..", "proto"))
TINY = os.path.join(FIXTURES, "enwik8_tiny", "model.safetensors")

_stub_dir = tempfile.mkdtemp(prefix="seqboat_e2e_stubs_")
# The health proto from its own folder, so that its module is health_pb2 (a grpc/ package would
# hide grpcio's).
for proto_path, proto in ((PROTO_DIR, "seqboat/v1/seqboat.proto"),
                          (os.path.join(PROTO_DIR, "grpc", "health", "v1"), "health.proto"),
                          (HERE, "reflection.proto")):
    subprocess.run(["protoc", "--proto_path=" + proto_path, "--python_out=" + _stub_dir, "--grpc_out=" + _stub_dir,
                    "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", proto], check=True)
sys.path.insert(0, _stub_dir)

import grpc  # noqa: E402
from seqboat.v1 import seqboat_pb2 as pb  # noqa: E402,F401
from seqboat.v1 import seqboat_pb2_grpc as pb_grpc  # noqa: E402
import health_pb2  # noqa: E402,F401
import health_pb2_grpc  # noqa: E402
import reflection_pb2  # noqa: E402,F401
import reflection_pb2_grpc  # noqa: E402,F401


def binary(name):
    path = os.path.join(BIN_DIR, name)
    if not os.path.exists(path):
        raise FileNotFoundError("%s is not built (expected at %s)" % (name, path))
    return path


def model_config(path=TINY):
    """The config JSON from a safetensors file's __metadata__, read independently of our C++."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["config"])


class Server:
    """A seqboat-server process; stop() sends SIGTERM and returns the exit code."""

    def __init__(self, *flags, model=TINY, metrics=True, http=True):
        self.stderr_text = None  # kept once stop() removes the file
        self.stderr_file = tempfile.NamedTemporaryFile(prefix="seqboat_server_", suffix=".log", delete=False)
        args = [binary("seqboat-server"), "--model", model, "--listen", "127.0.0.1:0",
                "--metrics_listen", "127.0.0.1:0" if metrics else "",
                "--http_listen", "127.0.0.1:0" if http else ""] + list(flags)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr_file, text=True)
        self.port = self.metrics_port = self.http_port = None
        lines = []
        deadline = time.time() + 60

        def read():
            for line in self.proc.stdout:
                lines.append(line)
                if line.startswith("seqboat-server: ready"):
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.time()))
        if not any(l.startswith("seqboat-server: ready") for l in lines):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("server did not start: stdout %r, stderr %r" % (lines, self.stderr()))
        for line in lines:
            if line.startswith("seqboat-server: listening on "):
                self.port = int(line.strip().rsplit(":", 1)[1])
            if line.startswith("seqboat-server: metrics on "):
                self.metrics_port = int(line.strip().rsplit(":", 1)[1].split("/")[0])
            if line.startswith("seqboat-server: HTTP API on "):
                self.http_port = int(line.strip().rsplit(":", 1)[1].split("/")[0])
        self.address = "127.0.0.1:%d" % self.port
        self.exit_code = None
        self.http_base = "http://127.0.0.1:%d" % self.http_port if self.http_port else None

    def stderr(self):
        if self.stderr_text is not None:
            return self.stderr_text
        with open(self.stderr_file.name) as f:
            return f.read()

    def channel(self):
        return grpc.insecure_channel(self.address)

    def stub(self):
        return pb_grpc.SeqBoatStub(self.channel())

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5) as r:
            return r.read().decode()

    def metric(self, name, labels=""):
        """The value of one sample (`name{labels}`) in /metrics."""
        key = name + ("{" + labels + "}" if labels else "")
        for line in self.metrics().splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        raise KeyError(key)

    def stop(self, timeout=30, killed=False):
        """`killed`: the test ended the process itself (no report that it had ended)."""
        if self.stderr_text is not None:  # stopped before
            return self.exit_code
        if self.proc.poll() is not None and not killed:
            # Already ended: unless a test signalled it, it crashed; show why (the stack trace).
            sys.stderr.write("seqboat-server on port %s had already ended (exit code %s) when stop() was called; its stderr:\n%s\n"
                             % (self.port, self.proc.returncode, self.stderr()[-20000:]))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.exit_code = self.proc.returncode
        self.proc.stdout.close()
        self.stderr_text = self.stderr()
        self.stderr_file.close()
        os.unlink(self.stderr_file.name)
        return self.exit_code


def greedy_request(tokens=None, text=None, n=16, **kw):
    r = pb.GenerateRequest(**kw)
    if tokens is not None:
        r.tokens.ids.extend(tokens)
    if text is not None:
        r.text = text
    r.sampling.temperature = 0.0
    r.stopping.max_new_tokens = n
    r.stopping.ignore_eos = True
    return r


def collect(stream):
    """Messages of a Generate stream -> (text, token ids, finish, messages)."""
    messages = list(stream)
    text = "".join(m.text for m in messages)
    tokens = [t for m in messages for t in m.token_ids]
    finishes = [m for m in messages if m.HasField("finish")]
    assert len(finishes) == 1 and messages[-1].HasField("finish"), "exactly one final message, last"
    return text, tokens, messages[-1].finish, messages


def eval_logits(tokens, model=TINY):
    """Teacher-forced logits [T, V] from seqboat-eval (one decode step per token)."""
    import numpy as np
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.npy")
        subprocess.run([binary("seqboat-eval"), "--model", model, "--tokens", ",".join(map(str, tokens)),
                        "--mode", "step", "--logits_out", out], check=True, capture_output=True)
        return np.load(out)


def self_signed_cert(directory):
    """A throwaway key and certificate for 127.0.0.1 and localhost: (key path, cert path)."""
    key, cert = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return key, cert


def fixture_prompt():
    import numpy as np
    return [int(t) for t in np.load(os.path.join(FIXTURES, "enwik8_tiny", "seq0.tokens.npy"))[:24]]


def memory_kb(pid):
    """(VmRSS, VmHWM) of a process in kB: now and at its peak."""
    values = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def sanitized(pid):
    """Whether the process runs under a sanitizer (its memory figures then mean little)."""
    with open("/proc/%d/maps" % pid) as f:
        return any(name in f.read() for name in ("libasan", "libtsan"))
