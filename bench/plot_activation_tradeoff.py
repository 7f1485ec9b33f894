#!/usr/bin/python3
"""Draws docs/activation_tradeoff.png from docs/activation_tradeoff.json (bench/activation_tradeoff.py).

Left: the demo model's held-out bits per byte against its mean GAU activation rate, one point
per activation bias. Right: decode tokens/s of the enwik8-size model at the rates the bench
measured for those biases. Needs matplotlib (apt-get install python3-matplotlib); nothing else
in the repository does.

    /usr/bin/python3 bench/plot_activation_tradeoff.py [--json docs/activation_tradeoff.json] [--out PNG]
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bias_label(bias):
    return "b=%+g" % bias if bias else "b=0"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=os.path.join(ROOT, "docs", "activation_tradeoff.json"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "activation_tradeoff.png"))
    args = p.parse_args()
    with open(args.json) as f:
        result = json.load(f)
    rows = sorted(result["biases"], key=lambda r: r["mean_activation_rate"])
    machine = result["machine"]
    decode = result.get("decode")
    panels = 2 if decode else 1

    fig, axes = plt.subplots(1, panels, figsize=(13 if decode else 7, 5.2), squeeze=False)
    quality = axes[0][0]
    rates = [100 * r["mean_activation_rate"] for r in rows]
    bits = [r["bits_per_byte"] for r in rows]
    quality.plot(rates, bits, "-o", color="tab:blue", zorder=3)
    for r, x, y in zip(rows, rates, bits):
        base = r["bias"] == 0
        quality.annotate(bias_label(r["bias"]), (x, y), textcoords="offset points",
                         xytext=(7, 4), fontsize=9, fontweight="bold" if base else "normal")
        if base:
            quality.plot([x], [y], "o", markersize=11, markerfacecolor="none",
                         markeredgecolor="black", zorder=4)
    quality.set_xlabel("mean GAU activation rate, demo model (% of layer-token pairs)")
    quality.set_ylabel("bits per byte, held-out text (lower is better)")
    quality.set_title("Quality: demo model (L=4), %d bytes, one pass\nbias b > 0: fewer activations"
                      % result["text"]["bytes"], fontsize=10)
    quality.grid(alpha=0.3)
    quality.margins(x=0.1, y=0.08)

    if decode:
        speed = axes[0][1]
        markers = ["o", "s", "^", "D"]
        for i, batch in enumerate(decode["batches"]):
            points = []
            for r in result["biases"]:
                row = r.get("decode", {}).get(str(batch))
                if row is None:
                    continue
                # tok/s of every round (the bench keeps the fastest): the bar's range.
                rounds = [1e3 * batch / ms for ms in row.get("round_median_ms") or [] if ms > 0]
                points.append((100 * row["measured_rate"], row["tokens_per_s"], r["bias"],
                               min(rounds, default=row["tokens_per_s"]),
                               max(rounds, default=row["tokens_per_s"])))
            if not points:
                continue
            points.sort()
            xs, ys, bs, lows, highs = zip(*points)
            line, = speed.plot(xs, ys, "-" + markers[i % len(markers)], label="batch %d" % batch,
                               zorder=3)
            speed.vlines(xs, lows, highs, colors=line.get_color(), alpha=0.35, linewidth=3,
                         zorder=2)
            for x, y, b, _, _ in points:
                speed.annotate(bias_label(b), (x, y), textcoords="offset points", xytext=(6, 4),
                               fontsize=8, fontweight="bold" if b == 0 else "normal")
        speed.set_xlabel("GAU activation rate measured in the timed decode steps (%)")
        speed.set_ylabel("decode tokens/s (batch / median step time)")
        speed.text(0.02, 0.02, "points: fastest of %d rounds; bars: range over the rounds"
                   % decode.get("rounds", 1), transform=speed.transAxes, fontsize=8,
                   color="dimgray")
        speed.set_title("Speed: enwik8-size model (L=14, D=616, w=1024), random weights, routers\n"
                        "calibrated to each bias's mean rate; position %d, %d threads; other\n"
                        "processes took %.0f%% of the CPUs during the bench"
                        % (decode["position"], decode["threads"],
                           100 * decode["others_cpu_share_run"]), fontsize=10)
        # One activation-rate scale for both panels.
        low = min(quality.get_xlim()[0], speed.get_xlim()[0])
        high = max(quality.get_xlim()[1], speed.get_xlim()[1])
        quality.set_xlim(low, high)
        speed.set_xlim(low, high)
        speed.margins(x=0.1)
        speed.set_ylim(0, 1.07 * speed.get_ylim()[1])  # room for the top point's label
        speed.grid(alpha=0.3)
        speed.legend()

    fig.suptitle("SeqBoat activation bias: quality vs decode speed, chosen per request\n"
                 "%s, nproc %d, %s, commit %s" % (machine["cpu_model"], machine["nproc"],
                                                  machine["date"], machine["git_commit"][:12]),
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("wrote " + args.out)


if __name__ == "__main__":
    main()
