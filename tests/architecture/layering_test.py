"""The layers' arrows (docs/ARCHITECTURE.md), checked on every #include of the tree.

Each source folder may include the project headers of the layers below it and no others;
runtime/ never includes a gRPC, protobuf, Prometheus or HTTP header; the client includes
only the protocol. The build's targets follow the same arrows (runtime/CMakeLists.txt), but a
header-only include would slip past them: this test does not let it."""
import os
import re
import sys
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROJECT = ("runtime/", "kernels/", "server/", "client/", "converter/", "tools/", "bench/", "tests/", "seqboat/")
LIBRARIES_OUTSIDE_RUNTIME = ("grpc", "grpcpp/", "google/protobuf", "prometheus/", "microhttpd", "httplib")

RUNTIME_BASE = ("runtime/model/", "runtime/util/")
BACKEND = ("runtime/backend.h",)
# Source prefix -> the project headers it may include (the first matching prefix decides).
RULES = [
    ("runtime/util/", ("runtime/util/",)),
    ("runtime/model/", RUNTIME_BASE),
    ("runtime/backend.", BACKEND + RUNTIME_BASE),
    ("runtime/fault_injecting_backend.", BACKEND + ("runtime/fault_injecting_backend.h",) + RUNTIME_BASE),
    ("runtime/cpu/", ("runtime/cpu/",) + BACKEND + RUNTIME_BASE),
    ("runtime/engine/", ("runtime/engine/",) + BACKEND + RUNTIME_BASE),
    ("kernels/", ("kernels/",) + BACKEND + RUNTIME_BASE),
    ("converter/", ("converter/",) + RUNTIME_BASE),
    # main() picks the backends: the one server file that sees them.
    ("server/server_main.cc", ("server/", "runtime/", "kernels/", "seqboat/v1/")),
    ("server/", ("server/", "runtime/engine/", "seqboat/v1/") + BACKEND + RUNTIME_BASE),
    ("client/", ("client/", "seqboat/v1/")),
]
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
SOURCES = (".h", ".cc", ".cu", ".cuh")


def includes(path):
    with open(path, encoding="utf-8") as f:
        return INCLUDE.findall(f.read())


def violations(root=ROOT):
    """'file: includes X' for every include a rule forbids."""
    found = []
    for folder in ("runtime", "kernels", "converter", "server", "client"):
        for directory, _, files in os.walk(os.path.join(root, folder)):
            for name in sorted(files):
                if not name.endswith(SOURCES):
                    continue
                path = os.path.join(directory, name)
                source = os.path.relpath(path, root).replace(os.sep, "/")
                allowed = next(a for prefix, a in RULES if source.startswith(prefix))
                for _, header in includes(path):
                    if header.startswith(PROJECT) and not header.startswith(allowed):
                        found.append("%s: includes %s" % (source, header))
                    if source.startswith("runtime/") and header.startswith(LIBRARIES_OUTSIDE_RUNTIME):
                        found.append("%s: includes %s (runtime uses no RPC, protobuf, metrics or HTTP library)"
                                     % (source, header))
    return found


class LayeringTest(unittest.TestCase):
    def test_every_include_follows_the_layers(self):
        self.assertEqual(violations(), [])

    def test_a_forbidden_include_is_caught(self):
        # The check itself, on a throwaway tree: an engine file that includes the CPU backend.
        import tempfile
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "runtime", "engine"))
            with open(os.path.join(root, "runtime", "engine", "x.cc"), "w") as f:
                f.write('#include "runtime/engine/engine.h"\n#include "runtime/cpu/cpu_backend.h"\n'
                        '#include <grpcpp/grpcpp.h>\n')
            self.assertEqual(violations(root), [
                "runtime/engine/x.cc: includes runtime/cpu/cpu_backend.h",
                "runtime/engine/x.cc: includes grpcpp/grpcpp.h (runtime uses no RPC, protobuf, metrics or HTTP library)",
            ])


if __name__ == "__main__":
    unittest.main()
