"""The CPU image (make image) in podman: run as a container, and as the pod of
deploy/k8s/deployment-cpu.yaml through `podman kube play`. Exits 77 (skipped) where podman
cannot run or the image is not built.

Nothing leaves loopback: the container shares the host's network with its listen addresses
moved to free 127.0.0.1 ports, and the pod has no network at all (--network none); the pod is
probed and driven from inside, with the image's own seqboat-cli."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness  # noqa: E402
from harness import pb, grpc, health_pb2, health_pb2_grpc  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEPLOY = os.environ.get("SEQBOAT_DEPLOY_DIR", os.path.join(ROOT, "deploy"))
IMAGE = os.environ.get("SEQBOAT_IMAGE", "localhost/seqboat-server:cpu")
MODEL_DIR = os.path.dirname(harness.TINY)
ENV = dict(os.environ, CONTAINERS_CONF=os.path.join(DEPLOY, "podman", "containers.conf"))
SKIP = 77


def podman(*args, check=True, timeout=120):
    result = subprocess.run(["podman"] + list(args), env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError("podman %s: exit %d\n%s%s" % (" ".join(args), result.returncode, result.stdout,
                                                           result.stderr))
    return result


def why_not_runnable():
    if shutil.which("podman") is None:
        return "podman is not installed (make image installs it)"
    info = podman("info", check=False)
    if info.returncode != 0:
        return "podman cannot run here: " + info.stderr.strip()[-300:]
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        return "the image %s is not built (make image)" % IMAGE
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_greedy(tokens, n):
    """The same greedy generation from the host's own build: what the container must give."""
    server = harness.Server(metrics=False, http=False)
    try:
        return harness.collect(server.stub().Generate(harness.greedy_request(tokens=tokens, n=n), timeout=30))[1]
    finally:
        server.stop()


class ContainerTest(unittest.TestCase):
    def setUp(self):
        self.name = "seqboat-test-%d" % os.getpid()
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        podman("run", "-d", "--name", self.name, "--read-only", "--network", "host",
               "-v", MODEL_DIR + ":/models:ro", IMAGE,
               "--listen", "127.0.0.1:%d" % self.grpc_port, "--http_listen", "127.0.0.1:%d" % self.http_port,
               "--metrics_listen", "127.0.0.1:%d" % self.metrics_port,
               "--shutdown_grace_s", "5", "--debug_step_delay_ms", "5")
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.grpc_port)

    def tearDown(self):
        self.channel.close()
        podman("rm", "-f", "-t", "0", self.name, check=False)

    def health(self, service=""):
        stub = health_pb2_grpc.HealthStub(self.channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def test_serves_drains_and_runs_unprivileged(self):
        serving = health_pb2.HealthCheckResponse.SERVING
        deadline = time.time() + 60
        while True:
            try:
                if self.health() == serving:
                    break
            except grpc.RpcError:
                pass
            self.assertLess(time.time(), deadline, podman("logs", self.name).stderr)
            time.sleep(0.2)
        self.assertEqual(self.health("seqboat.v1.SeqBoat"), serving)

        # A generation streams, token for token the host build's.
        prompt = harness.fixture_prompt()
        stub = harness.pb_grpc.SeqBoatStub(self.channel)
        messages = list(stub.Generate(harness.greedy_request(tokens=prompt, n=24), timeout=30))
        self.assertGreater(len(messages), 2)  # streamed, not one reply
        tokens = [t for m in messages for t in m.token_ids]
        self.assertEqual(messages[-1].finish.reason, pb.FINISH_REASON_LENGTH)
        self.assertEqual(tokens, host_greedy(prompt, 24))

        # Non-root, on a read-only root filesystem.
        self.assertEqual(podman("exec", self.name, "id", "-u").stdout.strip(), "10001")
        self.assertEqual(podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", self.name).stdout.strip(),
                         "true")
        write = podman("exec", self.name, "sh", "-c", "echo x > /probe", check=False)
        self.assertNotEqual(write.returncode, 0)
        self.assertIn("Read-only file system", write.stderr)

        # SIGTERM drains: the stream in flight ends normally, then the container exits 0.
        result = {}

        def run():
            try:
                result["finish"] = harness.collect(stub.Generate(harness.greedy_request(tokens=prompt, n=300),
                                                                 timeout=30))[2].reason
            except grpc.RpcError as e:
                result["finish"] = e.code()

        stream = threading.Thread(target=run)
        stream.start()
        time.sleep(0.4)
        podman("kill", "--signal", "TERM", self.name)
        stream.join(30)
        exit_code = podman("wait", self.name, timeout=60).stdout.strip()
        logs = podman("logs", self.name).stderr
        self.assertEqual(result.get("finish"), pb.FINISH_REASON_LENGTH, logs)
        self.assertEqual(exit_code, "0", logs)
        self.assertIn("Terminated: draining", logs)
        self.assertIn("seqboat-server: stopped", logs)


class KubePlayTest(unittest.TestCase):
    """deploy/k8s/deployment-cpu.yaml as podman plays it. Two changes in the copy played, both
    for podman: one replica (podman gives each replica the same host ports) and no `ports`
    (podman publishes container ports on the host; the pod runs with --network none)."""

    def setUp(self):
        import yaml
        with open(os.path.join(DEPLOY, "k8s", "deployment-cpu.yaml")) as f:
            self.deployment = yaml.safe_load(f)
        played = yaml.safe_load(yaml.safe_dump(self.deployment))
        played["spec"]["replicas"] = 1
        for container in played["spec"]["template"]["spec"]["containers"]:
            container.pop("ports", None)
            container["image"] = IMAGE
        self.directory = tempfile.mkdtemp(prefix="seqboat_kube_")
        self.yaml = os.path.join(self.directory, "deployment.yaml")
        with open(self.yaml, "w") as f:
            yaml.safe_dump(played, f)
        claim = self.deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        # The PVC: a podman volume of that name, bound to the directory holding the model.
        self.volume = claim
        podman("volume", "rm", "-f", claim, check=False)
        podman("volume", "create", "--opt", "type=none", "--opt", "o=bind", "--opt", "device=" + MODEL_DIR, claim)
        podman("kube", "play", "--network", "none", self.yaml, timeout=120)
        name = self.deployment["metadata"]["name"]
        self.pod = name + "-pod-0"
        self.container = self.pod + "-" + self.deployment["spec"]["template"]["spec"]["containers"][0]["name"]

    def tearDown(self):
        podman("kube", "down", self.yaml, check=False)
        podman("volume", "rm", "-f", self.volume, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def cli(self, *args):
        return podman("exec", self.container, "seqboat-cli", *args, check=False, timeout=60)

    def probe(self, spec):
        """A manifest probe (gRPC health), run inside the pod: (passed, what it printed)."""
        port, service = spec["grpc"]["port"], spec["grpc"].get("service", "")
        result = self.cli("--server", "127.0.0.1:%d" % port, "--timeout_s", "5", "health",
                          *([service] if service else []))
        return result.returncode == 0, (result.stdout + result.stderr).strip()

    def test_pod_serves_probes_pass_and_it_stops_cleanly(self):
        container_spec = self.deployment["spec"]["template"]["spec"]["containers"][0]
        startup = container_spec["startupProbe"]
        deadline = time.time() + startup["periodSeconds"] * startup["failureThreshold"]
        while not self.probe(startup)[0]:
            self.assertLess(time.time(), deadline, podman("logs", self.container).stderr)
            time.sleep(startup["periodSeconds"] / 4)
        for kind in ("readinessProbe", "livenessProbe"):
            passed, said = self.probe(container_spec[kind])
            self.assertTrue(passed, "%s: %s" % (kind, said))
            self.assertEqual(said, "SERVING")
        # The pod's securityContext holds: the server runs as user 10001.
        self.assertEqual(podman("exec", self.container, "id", "-u").stdout.strip(), "10001")

        prompt = harness.fixture_prompt()
        generated = self.cli("--server", "127.0.0.1:50051", "--json", "generate", "--tokens",
                             ",".join(map(str, prompt)), "--temperature", "0", "--max_new_tokens", "24",
                             "--ignore_eos")
        self.assertEqual(generated.returncode, 0, generated.stderr)
        import json
        tokens = [t for line in generated.stdout.splitlines() if line.strip()
                  for t in json.loads(line).get("tokenIds", [])]
        self.assertEqual(tokens, host_greedy(prompt, 24))

        # SIGTERM (a rolling update): readiness fails at once while calls are still served for
        # --drain_delay_s, then the server drains and exits 0 by itself; the pod's restart
        # policy (Always, as for any Deployment) starts it again.
        since = str(int(time.time()) - 1)
        podman("kill", "--signal", "TERM", self.container)
        time.sleep(1.0)
        passed, said = self.probe(container_spec["readinessProbe"])
        self.assertFalse(passed, said)
        self.assertEqual(said, "NOT_SERVING")
        served = self.cli("--server", "127.0.0.1:50051", "generate", "--tokens", ",".join(map(str, prompt)),
                          "--max_new_tokens", "8")
        self.assertEqual(served.returncode, 0, served.stderr)
        died = []
        deadline = time.time() + 30
        while not died and time.time() < deadline:
            time.sleep(0.5)
            events = podman("events", "--since", since, "--until", str(int(time.time()) + 1), "--filter",
                            "container=" + self.container, "--filter", "event=died", "--format",
                            "{{.ContainerExitCode}}").stdout.split()
            died = events
        logs = podman("logs", self.container).stderr
        self.assertEqual(died, ["0"], logs)
        self.assertIn("Terminated: draining (NOT_SERVING for", logs)
        self.assertIn("seqboat-server: stopped", logs)

        # Deleted, the pod is stopped as the kubelet stops it: SIGTERM, then SIGKILL after the
        # termination grace period. It exits 0 well before.
        startup_deadline = time.time() + startup["periodSeconds"] * startup["failureThreshold"]
        while not self.probe(startup)[0]:
            self.assertLess(time.time(), startup_deadline, podman("logs", self.container).stderr)
            time.sleep(0.5)
        grace = self.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        started = time.time()
        stop = podman("pod", "stop", "-t", str(grace), self.pod, check=False, timeout=grace + 30)
        seconds = time.time() - started
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assertLess(seconds, grace)  # it ended by itself: no SIGKILL
        state = podman("inspect", "--format", "{{.State.ExitCode}} {{.RestartCount}}", self.container).stdout.split()
        self.assertEqual(state, ["0", "1"], podman("logs", self.container).stderr)
        print("pod stopped in %.1f s (termination grace period %d s)" % (seconds, grace))


if __name__ == "__main__":
    reason = why_not_runnable()
    if reason:
        print("skipped: " + reason)
        sys.exit(SKIP)
    unittest.main(verbosity=2)
