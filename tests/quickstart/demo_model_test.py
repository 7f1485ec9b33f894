"""The bundled demo model through seqboat-convert and seqboat-eval (C++) against the
float64 PyTorch reference numbers in models/demo/reference.json (models/train_demo.py
--reference), and against the quality the README reports."""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BIN = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "build", "bin")
DEMO = os.path.join(ROOT, "models", "demo")


class DemoModelTest(unittest.TestCase):
    def test_cpp_bits_per_byte_equal_the_reference(self):
        with open(os.path.join(DEMO, "reference.json")) as f:
            reference = json.load(f)["windows"]
        with open(os.path.join(DEMO, "heldout.txt"), "rb") as f:
            heldout = f.read()
        with tempfile.TemporaryDirectory() as d:
            model = os.path.join(d, "demo.safetensors")
            subprocess.run([os.path.join(BIN, "seqboat-convert"), "--checkpoint", os.path.join(DEMO, "checkpoint.pt"),
                            "--dict", os.path.join(DEMO, "dict.txt"), "--out", model], check=True, capture_output=True)
            for case in reference:
                text = os.path.join(d, "window.txt")
                with open(text, "wb") as f:
                    f.write(heldout[case["offset"]:case["offset"] + case["bytes"]])
                r = subprocess.run([os.path.join(BIN, "seqboat-eval"), "--model", model, "--text_file", text,
                                    "--mode", "prefill"], check=True, capture_output=True, text=True)
                bits = float(re.search(r"bits/token (\S+)", r.stdout).group(1))
                self.assertAlmostEqual(bits, case["bits_per_byte"], delta=1e-3, msg=case["offset"])
                # Clearly better than the unigram entropy of English bytes (about 4.9 bits).
                self.assertLess(bits, 3.5)
                # Reduced precision costs at most what the server's --weight_dtype and
                # --fifo_dtype promise: 0.005 bits per byte for bf16, 0.02 for int8.
                for dtype, flag, tolerance in (("bf16", "weight_dtype", 0.005), ("int8", "weight_dtype", 0.02),
                                               ("bf16", "fifo_dtype", 0.005)):
                    r = subprocess.run([os.path.join(BIN, "seqboat-eval"), "--model", model, "--text_file", text,
                                        "--mode", "prefill", "--" + flag, dtype],
                                       check=True, capture_output=True, text=True)
                    self.assertIn(f"{flag} {dtype}", r.stdout)
                    reduced = float(re.search(r"bits/token (\S+)", r.stdout).group(1))
                    print(f"window {case['offset']}: {flag} {dtype} {reduced:.6f} vs reference "
                          f"{case['bits_per_byte']:.6f} bits per byte", file=sys.stderr)
                    self.assertAlmostEqual(reduced, case["bits_per_byte"], delta=tolerance,
                                           msg=f"{flag} {dtype} at {case['offset']}")


if __name__ == "__main__":
    unittest.main()
