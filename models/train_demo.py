#!/usr/bin/python3
"""Trains the bundled demo model: a small byte-level SeqBoat language model (enwik8
conventions) on the English text of Debian's `fortunes` package, on the CPU.

The model is tests/reference/seqboat_ref.py's SeqBoatLM (our PyTorch reference, written
from MODEL.md); training runs a batched float32 formulation of the same math (MD-EMA as an
FFT convolution, the GAU over every token with the FIFO window as an attention mask and
its output kept only where the router activates). `check_against_reference` proves the two
agree before training starts and after it ends. The router learns through the confidence
that scales the GAU output, as in the paper.

  /usr/bin/python3 models/train_demo.py --out models/demo [--minutes 50] [--steps N]

Writes OUT/checkpoint.pt (fairseq format: args + model) and OUT/dict.txt, and prints
held-out bits per byte and per-layer GAU activation rates (also OUT/train_log.json).
  /usr/bin/python3 models/train_demo.py --reference --out models/demo
then writes OUT/reference.json: float64 reference bits per byte on held-out windows, which
tests/quickstart checks seqboat-eval against.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
from seqboat_ref import SeqBoatConfig, SeqBoatLM, rotate, silu, _linear  # noqa: E402
from make_fixtures import base_args  # noqa: E402

EOS, PAD, UNK = 2, 1, 3
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
FORTUNE_DIR = "/usr/share/games/fortunes"
# The package's English collections, less the ones whose humour is about groups of people.
FORTUNE_FILES = ["computers", "cookie", "definitions", "education", "fortunes", "goedel", "humorists",
                 "kids", "law", "linux", "literature", "magic", "medicine", "miscellaneous", "news",
                 "people", "pets", "platitudes", "riddles", "science", "songs-poems", "sports",
                 "startrek", "wisdom", "work", "zippy", "pratchett", "paradoxum", "tao", "food"]


def load_text():
    parts = []
    for name in FORTUNE_FILES:
        with open(os.path.join(FORTUNE_DIR, name), "rb") as f:
            raw = f.read().decode("utf-8", errors="replace")
        # Fortunes are separated by lines holding only "%": make them blank lines.
        parts.append(raw.replace("\n%\n", "\n\n"))
    return "".join(parts)


def build_vocab(data: bytes):
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    counts[10] = 0  # the newline is </s>
    order = sorted((b for b in range(256) if counts[b] > 0), key=lambda b: (-counts[b], b))
    symbols = [str(b) for b in order]
    lines = ["%s %d" % (str(b), counts[b]) for b in order]
    byte_to_id = np.full(256, UNK, dtype=np.int64)
    for k, b in enumerate(order):
        byte_to_id[b] = k + 4
    byte_to_id[10] = EOS
    return symbols, lines, byte_to_id


def make_config(vocab_size):
    args = base_args(
        decoder_embed_dim=256, decoder_z_dim=64, decoder_hidden_dim=512, decoder_n_dim=16,
        decoder_layers=4, decoder_chunk_size=128, truncation_length=None, rel_pos_bias="rotary",
        attention_activation_fn="softmax", activation_fn="silu", normalization_type="layernorm",
        normalize_before=True, no_affine_final_norm=False, normalize_embedding=False,
        no_scale_embedding=False, share_decoder_input_output_embed=True, max_target_positions=4096,
        decoder_ffn_embed_dim=0, data="fortunes (Debian package)", save_dir="models/demo",
        tokens_per_sample=256, dropout=0.0, task="language_modeling", arch="seqboat_lm_demo")
    return args, SeqBoatConfig.from_fairseq_args(args, vocab_size)


def initialise(model, seed):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    D, N = cfg.embed_dim, cfg.n_dim
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed_tokens" not in name and "move" not in name and name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[1] ** -0.5)
            elif name.endswith(".bias") and "norm" not in name:
                p.zero_()
        dec = model.decoder
        dec.embed_tokens.weight.copy_(torch.randn(dec.embed_tokens.weight.shape, generator=g) * D ** -0.5)
        dec.embed_tokens.weight[PAD].zero_()
        for layer in dec.layers:
            u = layer.slag_layer
            # EMA decay q = 1 - p*alpha spread over [0.5, 0.995].
            q = 0.5 + 0.495 * torch.rand(D, N, generator=g)
            pa = 1.0 - q
            p_ = pa.sqrt()
            a_ = pa / p_
            u.move.delta.copy_(torch.logit(p_)[..., None])
            u.move.alpha.copy_(torch.logit(a_)[..., None])
            u.move.beta.copy_((torch.randn(D, N, generator=g) * 0.02 + 1.0)[..., None])
            u.move.gamma.copy_(torch.randn(D, N, generator=g))
            u.move.omega.copy_(torch.randn(D, generator=g))
            u.gamma.copy_(torch.randn(2, cfg.z_dim, generator=g) * 0.02 + 1.0)
            u.beta.zero_()
            u.q_router.temp.zero_()
            # Start the router undecided, leaning towards activation.
            u.hx_proj.bias[0] = 0.0
            u.hx_proj.bias[1] = 0.5


def layer_forward(u, x, cfg):
    """One SeqBoat unit over a batch x [B, T, D], the math of SeqBoatUnit.forward (exact
    horizon, no truncation)."""
    B, T, D = x.shape
    h = u.norm(x) if cfg.normalize_before else x
    k = u.move.kernel(T, x.dtype)  # D x T
    n = 2 * T
    conv = torch.fft.irfft(torch.fft.rfft(h, n=n, dim=1) * torch.fft.rfft(k.t(), n=n, dim=0), n=n, dim=1)[:, :T]
    mx = silu(conv + u.move.omega * h)
    o = _linear(mx, u.hx_proj)
    g, hx = o[..., :2], o[..., 2:]
    probs = torch.softmax(g / torch.exp(u.q_router.temp), dim=-1)
    p0, p1 = probs[..., 0], probs[..., 1]
    active = p1 > p0
    conf = torch.maximum(p0, p1)
    Z, H = cfg.z_dim, cfg.hidden_dim
    base = silu(_linear(mx, u.mx_proj))
    z, r, v = base[..., :Z], base[..., Z:Z + H], base[..., Z + H:]
    q = z * u.gamma[0] + u.beta[0]
    kk = z * u.gamma[1] + u.beta[1]
    pos = torch.arange(T)
    q = rotate(q, pos)
    kk = rotate(kk, pos)
    scores = q @ kk.transpose(1, 2) / math.sqrt(Z)  # B x T x T
    ci = torch.cumsum(active.long(), dim=1) - 1  # index among activated tokens
    back = ci.unsqueeze(2) - ci.unsqueeze(1)
    allowed = active.unsqueeze(2) & active.unsqueeze(1) & (back >= 0) & (back <= cfg.chunk_size)
    allowed = allowed | torch.eye(T, dtype=torch.bool).unsqueeze(0)  # rows of inactive tokens stay finite
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    y = _linear((weights @ v) * r, u.h_proj)
    gau = (conf * active.to(x.dtype)).unsqueeze(-1) * y
    out = silu(hx + gau + x)
    if not cfg.normalize_before:
        out = u.norm(out)
    return out, active


def model_forward(model, tokens):
    """tokens [B, T] -> logits [B, T, V], activations [L, B, T]."""
    cfg, dec = model.cfg, model.decoder
    x = dec.embed_tokens.weight[tokens]
    if cfg.scale_embedding:
        x = x * math.sqrt(cfg.embed_dim)
    acts = []
    for layer in dec.layers:
        x, active = layer_forward(layer.slag_layer, x, cfg)
        acts.append(active)
    if dec.final_norm is not None:
        x = dec.final_norm(x)
    return x @ dec.embed_tokens.weight.t(), torch.stack(acts)


def check_against_reference(model, tokens):
    """The batched float32 formulation against the float64 reference on one sequence."""
    with torch.no_grad():
        ours, acts = model_forward(model, tokens.unsqueeze(0))
        ref = model(tokens, horizon="exact", dtype=torch.float64)
    # Tokens whose router margin is tiny may decide differently in float32 and float64.
    agree = (acts[:, 0] == ref["activations"]).float().mean().item()
    diff = (ours[0].double() - ref["logits"]).abs().max().item()
    return diff, agree


def evaluate(model, ids, T, max_windows=None):
    """Bits per byte over non-overlapping windows, each starting after </s> as a prompt does."""
    total_bits, count = 0.0, 0
    act_sum = None
    windows = list(range(0, len(ids) - 1, T))
    if max_windows:
        windows = windows[:max_windows]
    with torch.no_grad():
        for start in windows:
            target = torch.as_tensor(ids[start:start + T], dtype=torch.long)
            inputs = torch.cat([torch.tensor([EOS]), target[:-1]])
            logits, acts = model_forward(model, inputs.unsqueeze(0))
            nll = F.cross_entropy(logits[0], target, reduction="sum").item()
            total_bits += nll / math.log(2)
            count += target.numel()
            a = acts[:, 0].float().sum(dim=1)
            act_sum = a if act_sum is None else act_sum + a
    return total_bits / count, (act_sum / count).tolist()


def write_reference(out, windows=4, T=256):
    """PyTorch bits per byte of the first held-out windows of the saved checkpoint, each
    starting after </s>: the numbers tests/quickstart compares seqboat-eval with."""
    ckpt = torch.load(os.path.join(out, "checkpoint.pt"))
    with open(os.path.join(out, "dict.txt")) as f:
        symbols = [line.split()[0] for line in f if line.strip()]
    _, cfg = make_config(len(symbols) + 4)
    model = SeqBoatLM(cfg)
    model.load_state_dict(ckpt["model"])
    byte_to_id = np.full(256, UNK, dtype=np.int64)
    for k, s in enumerate(symbols):
        byte_to_id[int(s)] = k + 4
    byte_to_id[10] = EOS
    with open(os.path.join(out, "heldout.txt"), "rb") as f:
        data = f.read()
    cases = []
    for w in range(windows):
        chunk = data[w * T:(w + 1) * T]
        ids = [int(i) for i in byte_to_id[np.frombuffer(chunk, dtype=np.uint8)]]
        tokens = torch.tensor([EOS] + ids)
        ref = model(tokens, horizon="exact", dtype=torch.float64)
        logp = torch.log_softmax(ref["logits"][:-1], dim=-1)
        bits = -logp[torch.arange(len(ids)), torch.tensor(ids)].sum().item() / math.log(2)
        cases.append({"offset": w * T, "bytes": len(chunk), "bits_per_byte": bits / len(ids),
                      "activation_rate_per_layer": ref["activations"].double().mean(dim=1).tolist()})
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"source": "models/train_demo.py --reference (float64 PyTorch reference)", "windows": cases}, f,
                  indent=1)
    print(json.dumps(cases, indent=1))


def main():
    if "--reference" in sys.argv:
        sys.argv.remove("--reference")
        ap = argparse.ArgumentParser()
        ap.add_argument("--out", required=True)
        write_reference(ap.parse_args().out)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=50.0, help="wall-time budget when --steps is 0")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps (0: as many as fit the budget)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    os.makedirs(opts.out, exist_ok=True)

    text = load_text()
    data = text.encode("utf-8")
    symbols, dict_lines, byte_to_id = build_vocab(data)
    ids = byte_to_id[np.frombuffer(data, dtype=np.uint8)]
    split = int(len(ids) * 0.95)
    train_ids, heldout_ids = ids[:split], ids[split:]
    counts = np.bincount(ids[split:], minlength=len(symbols) + 4).astype(np.float64)
    train_counts = np.bincount(train_ids, minlength=len(symbols) + 4).astype(np.float64) + 0.5
    unigram_p = train_counts / train_counts.sum()
    unigram_bits = float(-(counts * np.log2(unigram_p)).sum() / counts.sum())
    print("data: %d bytes (%d train, %d held out), %d symbols; held-out unigram cross-entropy %.3f bits/byte"
          % (len(ids), len(train_ids), len(heldout_ids), len(symbols), unigram_bits), flush=True)

    args, cfg = make_config(len(symbols) + 4)
    model = SeqBoatLM(cfg)
    initialise(model, opts.seed)
    params = sum(p.numel() for p in model.parameters())
    print("config:", json.dumps(cfg.to_dict()), "parameters: %d" % params, flush=True)
    probe = torch.as_tensor(heldout_ids[:200], dtype=torch.long)
    diff, agree = check_against_reference(model, probe)
    print("check vs reference at init: max |logit diff| %.2e, activation agreement %.4f" % (diff, agree), flush=True)
    assert diff < 1e-3 and agree > 0.99, "the training forward does not match the reference"

    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng = np.random.default_rng(opts.seed)
    T, B = opts.seq, opts.batch

    def batch():
        starts = rng.integers(0, len(train_ids) - T, size=B)
        y = np.stack([train_ids[s:s + T] for s in starts])
        x = np.concatenate([np.full((B, 1), EOS), y[:, :-1]], axis=1)
        return torch.as_tensor(x), torch.as_tensor(y)

    def step(lr):
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batch()
        logits, acts = model_forward(model, x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item() / math.log(2), acts.float().mean().item()

    start = time.time()
    total = opts.steps
    warmup = 100
    log = []
    if total == 0:  # time a few steps to fit the budget
        for _ in range(3):
            step(opts.lr * 0.01)
        per_step = (time.time() - start) / 3
        total = max(200, int(opts.minutes * 60 / per_step) - 3)
        print("%.2f s per step: training %d steps" % (per_step, total), flush=True)
    for i in range(total):
        if i < warmup:
            lr = opts.lr * (i + 1) / warmup
        else:
            lr = opts.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, total - warmup))))
        bits, rate = step(lr)
        if i % 50 == 0 or i == total - 1:
            entry = {"step": i, "train_bits_per_byte": bits, "activation": rate, "lr": lr,
                     "minutes": (time.time() - start) / 60}
            if i % 250 == 0 or i == total - 1:
                entry["heldout_bits_per_byte"], _ = evaluate(model, heldout_ids, T, max_windows=20)
            log.append(entry)
            print(json.dumps(entry), flush=True)
    minutes = (time.time() - start) / 60

    heldout_bpb, layer_rates = evaluate(model, heldout_ids, T)
    diff, agree = check_against_reference(model, probe)
    print("check vs reference after training: max |logit diff| %.2e, activation agreement %.4f" % (diff, agree))
    summary = {
        "steps": total, "batch": B, "seq": T, "lr": opts.lr, "threads": opts.threads, "minutes": minutes,
        "parameters": params, "heldout_bytes": int(len(heldout_ids)), "train_bytes": int(len(train_ids)),
        "heldout_bits_per_byte": heldout_bpb, "heldout_unigram_bits_per_byte": unigram_bits,
        "gau_activation_rate_per_layer": layer_rates, "reference_check_max_logit_diff": diff,
        "reference_check_activation_agreement": agree, "config": cfg.to_dict(), "log": log,
    }
    with open(os.path.join(opts.out, "train_log.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(opts.out, "dict.txt"), "w") as f:
        f.write("\n".join(dict_lines) + "\n")
    with open(os.path.join(opts.out, "heldout.txt"), "wb") as f:
        f.write(data[split:])
    ckpt = {"args": args, "model": model.fairseq_state_dict(),
            "extra_state": {"train_steps": total, "heldout_bits_per_byte": heldout_bpb}}
    torch.save(ckpt, os.path.join(opts.out, "checkpoint.pt"))
    print("held-out: %.4f bits/byte (unigram %.3f); GAU activation per layer: %s; %.1f minutes"
          % (heldout_bpb, unigram_bits, ", ".join("%.3f" % r for r in layer_rates), minutes))


if __name__ == "__main__":
    main()
