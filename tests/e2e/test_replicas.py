"""Three seqboat-server replicas on loopback behind real load balancing, driven by
`seqboat-cli bench`: gRPC client-side round-robin over their addresses (what a headless
Service gives a client), and nginx as an L7 gRPC proxy (grpc_pass). On each path: a replica
killed with SIGKILL mid-load, a rolling restart with SIGTERM, and the per-replica request
counts from each server's /metrics. SEQBOAT_NGINX_LOG=1 prints nginx's error log."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import harness

# Each engine iteration sleeps 5 ms, so that a 32-token stream is in flight for ~0.2 s.
SERVER_FLAGS = ["--debug_step_delay_ms", "5", "--max_batch", "8", "--max_waiting", "64",
                "--drain_delay_s", "1", "--shutdown_grace_s", "10"]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    """A server that keeps its gRPC port across restarts (the address clients know)."""

    def __init__(self):
        self.port = None  # the kernel's choice at the first start, kept after it
        self.server = None
        self.ok_before = 0  # OK requests counted by servers of this replica that ended

    def start(self):
        # The first start binds port 0: a port probed free and bound later can be taken in
        # between by another test's socket (a CI run lost one that way). A restart binds the
        # port its clients know; one bind that fails there is tried again.
        for attempt in range(3):
            try:
                self.server = harness.Server(*SERVER_FLAGS, "--listen", "127.0.0.1:%d" % (self.port or 0))
                break
            except RuntimeError:
                if self.port is None or attempt == 2:
                    raise
                time.sleep(0.5)
        if self.port is None:
            self.port = self.server.port
        assert self.server.port == self.port, (self.server.port, self.port)

    def ok_requests(self):
        return self.ok_before + self.server.metric("seqboat_requests_total", 'api="grpc",code="OK"')

    def kill(self):
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait(10)
        self.server.stop(killed=True)

    def restart_gracefully(self):
        """SIGTERM, wait for the drain to end (exit 0), start again on the same port."""
        self.ok_before = self.ok_requests()
        code = self.server.stop(timeout=30)
        assert code == 0, "exit code %s: %s" % (code, self.server.stderr()[-4000:])
        self.start()


class Bench:
    """seqboat-cli bench in the background; result() waits and returns its JSON report."""

    def __init__(self, target, duration_s, *extra, concurrency=12):
        self.out = tempfile.NamedTemporaryFile(prefix="seqboat_bench_", suffix=".json", delete=False).name
        args = [harness.binary("seqboat-cli"), "--server", target, "bench", "--concurrency", str(concurrency),
                "--duration_s", str(duration_s), "--prompt_tokens", "16", "--output_tokens", "32",
                "--timeout_s", "30", "--json_out", self.out] + list(extra)
        self.started = time.time()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def result(self, timeout):
        stdout, _ = self.proc.communicate(timeout=timeout)
        self.wall = time.time() - self.started
        with open(self.out) as f:
            report = json.load(f)
        os.unlink(self.out)
        report["stdout"] = stdout
        return report


def nginx_config(directory, listen_port, replicas):
    """nginx as an L7 gRPC proxy over the replicas, everything it writes inside `directory`."""
    # A replica that refused a connection is tried again after fail_timeout: short, so that a
    # restarted one is back soon (nginx's default, 10 s, outlasts a rolling restart of three).
    upstreams = "\n".join("    server 127.0.0.1:%d max_fails=1 fail_timeout=1s;" % r.port for r in replicas)
    return """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream seqboat {{
{upstreams}
  }}
  server {{
    listen 127.0.0.1:{port} http2;
    location / {{
      grpc_pass grpc://seqboat;
      # A refused or broken connection before any response goes to the next replica, POSTs
      # too (non_idempotent): a stream that a draining replica refused (it opened as the
      # GOAWAY crossed it) never ran, and nginx, unlike a gRPC client, does not retry it itself.
      grpc_next_upstream error timeout non_idempotent;
      grpc_read_timeout 60s;
    }}
  }}
}}
""".format(d=directory, port=listen_port, upstreams=upstreams)


class ReplicasTest(unittest.TestCase):
    def setUp(self):
        # Each replica's server (the current one, after restarts) is stopped at the end, also
        # when a later replica fails to start here (tearDown would not run then, and the
        # started servers would outlive the test).
        self.replicas = []
        for _ in range(3):
            r = Replica()
            r.start()
            self.replicas.append(r)
            self.addCleanup(lambda r=r: r.server.stop())

    def counts(self):
        return [int(r.ok_requests()) for r in self.replicas]

    def check_share(self, before, after, label):
        served = [b - a for a, b in zip(before, after)]
        total = sum(served)
        print("%s: OK requests per replica (from /metrics): %s" % (label, served))
        for i, n in enumerate(served):
            # Round-robin: each replica takes a fair share (a third, loosely).
            self.assertGreater(n, total * 0.15, "replica %d served %d of %d" % (i, n, total))
        return served

    def replica_loss(self, target, label, broken):
        """`broken`: the statuses a stream whose replica died under it may end with."""
        before = self.counts()
        bench = Bench(target, 6)
        time.sleep(2.0)
        killed = time.time()
        self.replicas[0].kill()
        report = bench.result(timeout=60)
        codes = report["requests_by_code"]
        print("%s, replica 0 killed at %.1f s: %s; bench wall %.1f s" % (label, killed - bench.started, codes,
                                                                     bench.wall))
        # Streams in flight on the killed replica fail (at most one per bench worker), and fail
        # fast: the bench ends on time although each call may wait 30 s.
        self.assertEqual(set(codes) - {"OK"} - set(broken), set(), codes)
        lost = sum(codes.get(code, 0) for code in broken)
        self.assertGreaterEqual(lost, 1, codes)
        self.assertLessEqual(lost, 12, codes)
        self.assertLess(bench.wall, 6 + 5)
        self.assertLess(report["e2e_ms"]["max"], 3000, report["e2e_ms"])
        # New requests go to the other two and succeed.
        after_loss = Bench(target, 0, "--requests", "60").result(timeout=60)
        self.assertEqual(after_loss["requests_by_code"], {"OK": 60}, after_loss["requests_by_code"])
        survivors = [int(r.ok_requests()) for r in self.replicas[1:]]
        self.assertGreater(sum(survivors) - sum(before[1:]), 60 - 1)
        self.replicas[0].start()

    def rolling_restart(self, target, label):
        before = self.counts()
        bench = Bench(target, 14)
        time.sleep(1.0)
        for r in self.replicas:
            r.restart_gracefully()
            time.sleep(2.0)  # the restarted replica is back in the rotation before the next goes
        report = bench.result(timeout=60)
        codes = report["requests_by_code"]
        print("%s, rolling restart: %s; bench wall %.1f s" % (label, codes, bench.wall))
        # Not one stream lost: every request of the run is OK.
        self.assertEqual(set(codes), {"OK"}, codes)
        self.assertGreater(codes["OK"], 100, codes)
        return self.check_share(before, self.counts(), label + ", rolling restart")

    def every_check(self, target, label, broken):
        """The spread over the replicas, a replica killed, a rolling restart, through `target`."""
        before = self.counts()
        report = Bench(target, 0, "--requests", "90").result(timeout=60)
        self.assertEqual(report["requests_by_code"], {"OK": 90})
        self.check_share(before, self.counts(), label)
        self.replica_loss(target, label, broken)
        self.rolling_restart(target, label)

    def test_client_side_round_robin(self):
        # The client sees the connection break: UNAVAILABLE.
        self.every_check("ipv4:" + ",".join("127.0.0.1:%d" % r.port for r in self.replicas), "round_robin",
                         ("UNAVAILABLE",))

    def test_nginx_grpc_proxy(self):
        if not os.path.exists(NGINX):
            self.skipTest("nginx is not installed (make deps installs it)")
        directory = tempfile.mkdtemp(prefix="seqboat_nginx_")
        port = free_port()
        with open(os.path.join(directory, "nginx.conf"), "w") as f:
            f.write(nginx_config(directory, port, self.replicas))
        nginx = subprocess.Popen([NGINX, "-c", os.path.join(directory, "nginx.conf"), "-e",
                                  os.path.join(directory, "error.log")])
        try:
            deadline = time.time() + 10
            while time.time() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
            # nginx ends a stream whose upstream broke after its headers with RST_STREAM
            # INTERNAL_ERROR, which gRPC reads as INTERNAL; before the headers it sends the
            # request to the next replica (non_idempotent), and answers 502, UNAVAILABLE, only
            # when none is left to try.
            self.every_check("127.0.0.1:%d" % port, "nginx", ("INTERNAL", "UNAVAILABLE"))
        finally:
            nginx.send_signal(signal.SIGQUIT)  # graceful stop
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
            with open(os.path.join(directory, "error.log")) as f:
                log = f.read()
            if os.environ.get("SEQBOAT_NGINX_LOG"):
                print(log[-6000:])
            shutil.rmtree(directory, ignore_errors=True)
        self.assertNotIn("[emerg]", log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
