"""Checks deploy/: `config` runs promtool on the Prometheus files and parses every manifest;
`metrics` starts the real seqboat-server and fails naming any seqboat_* metric that deploy/
uses (HPA, adapter rules, alerts, dashboard) but the server does not export."""
import glob
import json
import os
import re
import subprocess
import sys
import unittest

import yaml

DEPLOY = os.environ.get("SEQBOAT_DEPLOY_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "deploy"))


def yaml_files():
    return sorted(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True) +
                  glob.glob(os.path.join(DEPLOY, "**", "*.yml"), recursive=True))


class ConfigTest(unittest.TestCase):
    def test_promtool_accepts_config_and_rules(self):
        for args in (["check", "config", os.path.join(DEPLOY, "prometheus", "prometheus.yml")],
                     ["check", "rules", os.path.join(DEPLOY, "prometheus", "alerts.yml")]):
            r = subprocess.run(["promtool"] + args, capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_every_yaml_parses_and_manifests_are_well_formed(self):
        files = yaml_files()
        self.assertGreater(len(files), 8)
        kinds = {}
        for path in files:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
            self.assertTrue(docs, path)
            if os.sep + "k8s" + os.sep not in path or path.endswith("prometheus-adapter-rules.yaml"):
                continue
            for doc in docs:
                self.assertIn("apiVersion", doc, path)
                self.assertIn("kind", doc, path)
                if doc["kind"] != "Kustomization":
                    self.assertIn("name", doc["metadata"], path)
                kinds.setdefault(doc["kind"], []).append((path, doc))
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"):
            self.assertIn(kind, kinds)
        for path, deployment in kinds["Deployment"]:
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                self.assertEqual(container[probe]["grpc"]["port"], 50051, (path, probe))
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            self.assertEqual(annotations["prometheus.io/port"], "9464")
            if "gpu" in os.path.basename(path):
                self.assertEqual(container["resources"]["limits"]["nvidia.com/gpu"], 1)
            # The kubelet's SIGKILL comes after the drain: the NOT_SERVING delay, then the grace.
            args = container["args"]
            flag = lambda name: float(args[args.index(name) + 1]) if name in args else 0.0
            self.assertGreater(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
                               flag("--drain_delay_s") + flag("--shutdown_grace_s") + 1, path)
        service = kinds["Service"][0][1]
        self.assertEqual(service["spec"]["clusterIP"], "None")
        with open(os.path.join(DEPLOY, "k8s", "kustomization.yaml")) as f:
            for resource in yaml.safe_load(f)["resources"]:
                self.assertTrue(os.path.exists(os.path.join(DEPLOY, "k8s", resource)), resource)

    def test_dashboard_is_json_with_queries(self):
        with open(os.path.join(DEPLOY, "grafana", "seqboat-dashboard.json")) as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        self.assertGreaterEqual(len(dashboard["panels"]), 8)
        self.assertTrue(any("seqboat_gau_activated_tokens_total" in e for e in exprs))


def used_metric_names():
    names = set()
    paths = yaml_files() + glob.glob(os.path.join(DEPLOY, "**", "*.json"), recursive=True)
    for path in paths:
        with open(path) as f:
            names.update(re.findall(r"\bseqboat_[a-z0-9_]+", f.read()))
    return names


def exported_metric_names(metrics_text):
    exported = set()
    for line in metrics_text.splitlines():
        match = re.match(r"# TYPE (\S+) (\S+)", line)
        if match:
            name, kind = match.groups()
            exported.add(name)
            if kind in ("histogram", "summary"):
                exported.update({name + "_bucket", name + "_sum", name + "_count"})
    return exported


def check_metrics(server_bin, model):
    os.environ["SEQBOAT_BIN_DIR"] = os.path.dirname(server_bin)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
    import harness  # the e2e harness starts and stops the real server
    server = harness.Server(model=model)
    try:
        exported = exported_metric_names(server.metrics())
    finally:
        server.stop()
    used = used_metric_names()
    missing = sorted(n for n in used if n not in exported)
    # Names that are only job or rule names (not metrics) would start with seqboat_ too; the
    # deploy files use none.
    if missing:
        print("deploy/ uses metrics the server does not export: %s" % ", ".join(missing))
        return 1
    print("deploy/ uses %d metric names, all exported: %s" % (len(used), ", ".join(sorted(used))))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "metrics":
        sys.exit(check_metrics(*sys.argv[2:4]))
    unittest.main()
