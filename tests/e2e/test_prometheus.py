"""Debian's real Prometheus server scrapes seqboat-server's /metrics; its query API must
return our counters with the values the endpoint shows."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import harness

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusTest(unittest.TestCase):
    def test_real_prometheus_scrapes_our_metrics(self):
        self.assertTrue(os.path.exists(PROMETHEUS), "Debian's prometheus package is not installed")
        t_launch = time.time()
        server = harness.Server()
        work = tempfile.mkdtemp(prefix="seqboat_prometheus_")
        prom = None
        try:
            stub = server.stub()
            for i in range(3):
                harness.collect(stub.Generate(harness.greedy_request(text="scrape %d " % i, n=10)))
            expected = server.metric("seqboat_generated_tokens_total")
            self.assertEqual(expected, 30)
            config = os.path.join(work, "prometheus.yml")
            with open(config, "w") as f:
                f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                        "scrape_configs:\n  - job_name: seqboat\n    static_configs:\n"
                        "      - targets: ['127.0.0.1:%d']\n" % server.metrics_port)
            port = free_port()
            prom = subprocess.Popen([PROMETHEUS, "--config.file=" + config, "--storage.tsdb.path=" + work + "/data",
                                     "--web.listen-address=127.0.0.1:%d" % port],
                                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "prometheus.log"), "w"))

            def query(q):
                url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": q}))
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = json.loads(r.read())
                return [float(s["value"][1]) for s in body["data"]["result"]]

            values, deadline = [], time.time() + 45
            while time.time() < deadline:
                try:
                    values = query("seqboat_generated_tokens_total")
                    if values == [expected]:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            self.assertEqual(values, [expected], open(os.path.join(work, "prometheus.log")).read()[-2000:])
            self.assertEqual(query('seqboat_requests_total{api="grpc",code="OK"}'), [3.0])
            self.assertEqual(query("seqboat_time_to_first_token_seconds_count"), [3.0])
            self.assertEqual(query("seqboat_engine_serving"), [1.0])
            self.assertEqual(len(query("seqboat_gau_activation_ratio")), harness.model_config()["layers"])
            # The process series describe the server's own process.
            [start] = query("process_start_time_seconds")
            self.assertLessEqual(abs(start - t_launch), 5, "started at %s, launched at %s" % (start, t_launch))
            [resident] = query("process_resident_memory_bytes")
            rss_kb = harness.memory_kb(server.proc.pid)[0]
            self.assertLess(abs(resident / 1024 - rss_kb), 0.25 * rss_kb, (resident, rss_kb))
            [fds] = query("process_open_fds")
            # Connections may open or close between the scrape and this look.
            self.assertLessEqual(abs(fds - len(os.listdir("/proc/%d/fd" % server.proc.pid))), 4)
            self.assertGreater(query("process_cpu_seconds_total")[0], 0)
            if not harness.sanitized(server.proc.pid):
                [heap] = query("seqboat_heap_in_use_bytes")
                self.assertGreater(heap, 1 << 20)  # threads, tables and buffers: megabytes
                self.assertLess(heap, resident)
        finally:
            if prom is not None:
                prom.terminate()
                prom.wait(10)
            server.stop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
