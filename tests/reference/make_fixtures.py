#!/usr/bin/python3
"""Regenerates the reference fixtures of the C++ runtime from the PyTorch reference.

    cd /work/main && /usr/bin/python3 tests/reference/make_fixtures.py --out tests/fixtures

Deterministic: fixed seeds, fixed tensor and key orders; running it twice gives
byte-identical files. Every run also checks itself (assertions, not tests of the C++):
  (i)   a float64 step-by-step recurrent implementation written separately below (EMA
        recurrence with a w-slot FIFO; for `trained` the truncated-window recurrence
        S <- q S + u_t - q^T u_{t-T}) agrees with the parallel forward of seqboat_ref.py to
        1e-9 on every fixture sequence, decisions exactly;
  (ii)  activation rates per layer (20-60% for the normal models, 100% / 0% for the forced
        ones) and decision margins: every |p1 - p0| > 1e-4 (in fact > MIN_MARGIN_TARGET), and
        most > 0.1;
  (iii) for the `exact` horizon the first T = truncation_length positions equal `trained`;
  plus a float32 run of the same reference that must reproduce every decision exactly and
  the logits closely, so the fixtures are reachable by an fp32 runtime.
The models of BIASED_MODELS also get `exact` fixtures at three router activation-bias
settings (see choose_biases), each checked by (i), the margins and the float32 run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import struct
import sys
from argparse import Namespace
from collections import OrderedDict, deque

# OpenBLAS chooses its kernels by CPU (and one thread takes other paths than several); they
# round differently in the last bits, which shows in the manifest's float64 figures. Pin
# both (before numpy and torch load it) so that any x86-64 machine writes the same bytes.
os.environ["OPENBLAS_CORETYPE"] = "Haswell"
os.environ["OPENBLAS_NUM_THREADS"] = "2"

import numpy as np
import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seqboat_ref import SeqBoatConfig, SeqBoatLM  # noqa: E402

CONVERTER_VERSION = "reference-1"
HORIZONS = ("exact", "trained")
SEQ_LENGTHS = (150, 97, 40)
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
BOS, PAD, EOS, UNK = 0, 1, 2, 3

MIN_MARGIN_REQUIRED = 1e-4  # the brief's hard floor for |p1 - p0|
MIN_MARGIN_TARGET = 1e-3  # what the seed search insists on (10x safety)
DECISIVE = 0.1  # "most tokens" have |p1 - p0| above this ...
DECISIVE_SHARE = 0.75  # ... in at least this share of tokens, per layer and horizon
RATE_RANGE = (0.2, 0.6)  # activation rate per layer (normal models)
RATE_SEARCH = (0.3, 0.5)  # where the router threshold is placed
ROUTER_SPREAD = 2.5  # std of the router logit difference, in units of the temperature
RECURRENT_TOL = 1e-9
FP32_LOGIT_TOL = 2e-5  # float32 forward vs float64 (the C++ parity tolerance is 1e-4)
BIASED_MODELS = ("enwik8_tiny", "laplace_rms_word")  # get activation-bias fixtures
BIAS_HORIZON = "exact"
BIAS_MAGNITUDES = (0.5, 1.0, 1.5, 2.0, 3.0)  # candidate |bias|, tried in this order
BIAS_RATE_SHIFT = 0.10  # the least move of the activation rate a bias setting must cause

torch.set_num_threads(1)  # deterministic BLAS summation order


# ======================================================================================
# Vocabularies and the tokenizer (MODEL.md, "Tokenizer").
# ======================================================================================
def byte_vocab():
    """About 200 byte values: printable ASCII, tab/CR/VT/FF, every UTF-8 continuation byte,
    the lead bytes of some 2-, 3- and 4-byte characters. No symbol for byte 10 (newline).
    Unknown on purpose: 0-8, 14-31, 127, 192-193, 216-225, 234-239, 241-255."""
    values = [9, 11, 12, 13] + list(range(32, 127)) + list(range(128, 192))
    values += list(range(194, 216)) + list(range(226, 234)) + [240]
    assert 10 not in values and len(set(values)) == len(values)
    return [str(v) for v in values]


def char_vocab():
    """About 60 characters, multi-byte ones included. No symbol for the space."""
    chars = list("abcdefghijklmnopqrstuvwxyz") + list("ACST") + list("0123456789")
    chars += list(".,!?'-_") + ['"', "\\"]
    chars += ["é", "è", "ß", "ü", "ñ", "€", "£", "α", "β", "中", "文", "日", "本", "😀"]
    assert len(set(chars)) == len(chars)
    assert all(len(c) == 1 and not c.isspace() for c in chars)
    return chars


WORDS = """the of and to a in is that it was for on are as with his they at be this from
have or by one had not but what all were when we there can an your which their said if
do will each about how up out them then she many some so these would other into has more
her two like him see time could no make than first been its who now people my made over
did down only way find use may water long little very after words called just where
most know get through back much go good new write our me man too any day same right look
think also around another came come work three word must because does part even place
well such here take why things help put years different away again off went old number
cat sat mat dog ran , . ? ! ; 1 2 2023 café naïve über résumé 東京""".split()


def word_vocab():
    assert len(set(WORDS)) == len(WORDS)
    return list(WORDS)


def dict_lines(file_symbols, seed):
    """fairseq dict.txt: `<symbol> <count>`, counts strictly decreasing (fairseq sorts by
    count). The file order is a fixed shuffle of the symbol list, so ids do not follow any
    simple rule (e.g. id != byte + 4)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    order = rng.permutation(len(file_symbols))
    symbols = [file_symbols[i] for i in order]
    counts = [100000 - 37 * k - int(rng.integers(0, 30)) for k in range(len(symbols))]
    return symbols, ["%s %d" % (s, c) for s, c in zip(symbols, counts)]


ASCII_SPACE_NO_NL = " \t\r\v\f"  # word separators (C isspace minus the newline)


class Tokenizer:
    """Written from MODEL.md: ids are fairseq Dictionary ids (specials 0-3, file symbol k
    has id k + 4).
    byte: the UTF-8 bytes of the text; byte 10 (newline) -> </s> (2); a byte with no
          symbol -> <unk> (3).
    char: each Unicode code point is one symbol; '\\n' -> 2; unknown -> 3.
    word: '\\n' -> 2 (each line end); the rest of each line is split on ASCII whitespace
          (space, tab, CR, VT, FF); every word is one symbol, unknown -> 3."""

    def __init__(self, style, file_symbols):
        self.style = style
        self.symbols = SPECIALS + list(file_symbols)
        self.index = {}
        for i, s in enumerate(self.symbols):
            self.index.setdefault(s, i)

    def encode(self, text):
        ids = []
        if self.style == "byte":
            for b in text.encode("utf-8"):
                ids.append(EOS if b == 10 else self.index.get(str(b), UNK))
        elif self.style == "char":
            for ch in text:
                ids.append(EOS if ch == "\n" else self.index.get(ch, UNK))
        elif self.style == "word":
            lines = text.split("\n")
            for li, line in enumerate(lines):
                word = ""
                for ch in line + " ":
                    if ch in ASCII_SPACE_NO_NL:
                        if word:
                            ids.append(self.index.get(word, UNK))
                        word = ""
                    else:
                        word += ch
                if li < len(lines) - 1:
                    ids.append(EOS)
        else:
            raise ValueError(self.style)
        return ids


# ======================================================================================
# The models.
# ======================================================================================
def base_args(**kw):
    """A fairseq-like argparse.Namespace: every arg that changes the math plus training
    leftovers the converter must ignore."""
    args = dict(
        arch="seqboat_lm",
        task="language_modeling",
        criterion="cross_entropy",
        optimizer="adam",
        adam_betas="(0.9, 0.98)",
        adam_eps=1e-08,
        lr=[0.001],
        lr_scheduler="linear_decay",
        warmup_updates=10,
        weight_decay=0.1,
        clip_norm=0.25,
        seed=1,
        max_update=100,
        max_tokens=8192,
        update_freq=[1],
        fp16=False,
        dropout=0.1,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        activation_dropout=0.0,
        feature_dropout=False,
        data="data-bin/tiny",
        save_dir="checkpoints/tiny",
        sample_break_mode="none",
        add_bos_token=False,
        tokens_per_sample=512,
        decoder_input_dim=None,
        decoder_output_dim=None,
        adaptive_input=False,
        adaptive_softmax_cutoff=None,
        adaptive_softmax_dropout=0,
        tie_adaptive_weights=False,
        init_temp_scale=0.3,
        density_threshold=0.9,
        local_pos=False,
    )
    args.update(kw)
    if args["decoder_input_dim"] is None:
        args["decoder_input_dim"] = args["decoder_embed_dim"]
    if args["decoder_output_dim"] is None:
        args["decoder_output_dim"] = args["decoder_embed_dim"]
    return Namespace(**dict(sorted(args.items())))


ENWIK8_TEXT = (
    "The enwik8 data set is the first 100,000,000 bytes of an English Wikipedia dump.\n"
    "It holds markup such as [[links]] and {{templates}}, caf\u00e9s, na\u00efve "
    "r\u00e9sum\u00e9s, 5\u20ac, \u4e2d\u6587 and \u65e5\u672c\u8a9e text, an emoji "
    "\U0001F600, a tab\there, and a byte we never saw: \u00ff\u0416.\n"
    "<page><title>SeqBoat</title><text>Sparse modular activation.</text></page>\n"
)

CHAR_TEXT = (
    "the_caf\u00e9_serves_stra\u00dfe_coffee_for_5\u20ac_or_3\u00a3!\n"
    "\u4e2d\u6587_and_\u65e5\u672c,_\u03b1_and_\u03b2,_\u00fcber_ni\u00f1o_\U0001F600.\n"
    "She said \"hi\" to C:\\temp; Sam's dog ran.\n"
    "a_long_line_of_text_to_fill_the_sequence_with_more_characters_than_needed...\n"
)


def word_text(rng, n_words):
    words = word_vocab()
    out = []
    for _ in range(n_words):
        r = rng.random()
        if r < 0.06:
            out.append("\n")
        elif r < 0.09:
            out.append("zebra")  # unknown -> <unk>
        else:
            out.append(words[int(rng.integers(0, len(words)))])
    return " ".join(out)


MODELS = OrderedDict()
MODELS["enwik8_tiny"] = dict(
    style="byte",
    vocab=byte_vocab,
    text=ENWIK8_TEXT,
    args=dict(
        decoder_embed_dim=40,
        decoder_z_dim=24,
        decoder_hidden_dim=56,
        decoder_n_dim=4,
        decoder_layers=3,
        decoder_chunk_size=16,
        truncation_length=48,
        rel_pos_bias="rotary",
        attention_activation_fn="softmax",
        activation_fn="silu",
        normalization_type="layernorm",
        normalize_before=True,
        no_affine_final_norm=True,
        normalize_embedding=False,
        no_scale_embedding=False,
        share_decoder_input_output_embed=True,
        max_target_positions=512,
        decoder_ffn_embed_dim=0,
    ),
    seed=1000,
)
MODELS["simple_relu2_post"] = dict(
    style="char",
    vocab=char_vocab,
    text=CHAR_TEXT,
    args=dict(
        decoder_embed_dim=36,
        decoder_z_dim=20,
        decoder_hidden_dim=44,
        decoder_n_dim=3,
        decoder_layers=2,
        decoder_chunk_size=8,
        truncation_length=2048,
        rel_pos_bias="simple",
        attention_activation_fn="relu2",
        activation_fn="silu",
        normalization_type="scalenorm",
        normalize_before=False,
        no_affine_final_norm=False,
        normalize_embedding=False,
        no_scale_embedding=False,
        share_decoder_input_output_embed=False,
        max_target_positions=16,  # < attention span: the bias clamp is exercised
        decoder_ffn_embed_dim=72,
    ),
    seed=2000,
)
MODELS["laplace_rms_word"] = dict(
    style="word",
    vocab=word_vocab,
    text=None,
    args=dict(
        decoder_embed_dim=32,
        decoder_z_dim=16,
        decoder_hidden_dim=48,
        decoder_n_dim=2,
        decoder_layers=2,
        decoder_chunk_size=4,
        truncation_length=24,
        rel_pos_bias="rotary",
        attention_activation_fn="laplace",
        activation_fn="silu",
        normalization_type="rmsnorm",
        normalize_before=True,
        no_affine_final_norm=False,
        normalize_embedding=True,
        no_scale_embedding=True,
        share_decoder_input_output_embed=True,
        max_target_positions=512,
        decoder_ffn_embed_dim=40,
    ),
    seed=3000,
)
FORCED = OrderedDict([("enwik8_tiny_all_on", ("enwik8_tiny", True)),
                      ("enwik8_tiny_all_off", ("enwik8_tiny", False))])


# ======================================================================================
# Initialisation.
# ======================================================================================
def f32(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def logit(p):
    return np.log(p) - np.log1p(-p)


@torch.no_grad()
def initialise(model: SeqBoatLM, rng):
    cfg = model.cfg
    D, N, Z, H, V = cfg.embed_dim, cfg.n_dim, cfg.z_dim, cfg.hidden_dim, cfg.vocab_size
    dec = model.decoder
    emb = rng.normal(0.0, D ** -0.5, size=(V, D))
    emb[PAD] = 0.0
    dec.embed_tokens.weight.copy_(f32(emb))
    if not cfg.tied_embeddings:
        dec.output_projection.weight.copy_(f32(rng.normal(0.0, D ** -0.5, size=(V, D))))

    def init_norm(seq_norm):
        n = seq_norm.norm
        if not n.affine:
            return
        if n.kind == "layernorm":
            n.weight.copy_(f32(1.0 + 0.1 * rng.normal(size=D)))
            n.bias.copy_(f32(0.1 * rng.normal(size=D)))
        elif n.kind == "scalenorm":
            n.scalar.copy_(f32(1.0 + 0.1 * rng.normal(size=1)))
        else:
            n.weight.copy_(f32(1.0 + 0.1 * rng.normal(size=D)))

    def init_linear(lin):
        fan_in = lin.weight.shape[1]
        lin.weight.copy_(f32(rng.normal(0.0, fan_in ** -0.5, size=tuple(lin.weight.shape))))
        if lin.bias is not None:
            lin.bias.copy_(f32(0.05 * rng.normal(size=tuple(lin.bias.shape))))

    if dec.embed_norm is not None:
        init_norm(dec.embed_norm)
    for layer in dec.layers:
        u = layer.slag_layer
        init_norm(u.norm)
        # q = 1 - p a spread over [0.1, 0.98], skewed towards long memories.
        q = 0.1 + 0.88 * np.sqrt(rng.random(size=(D, N)))
        pa = 1.0 - q
        x = rng.uniform(0.3, 0.7, size=(D, N))
        p = pa ** x
        a = pa / p
        u.move.delta.copy_(f32(logit(p)[..., None]))
        u.move.alpha.copy_(f32(logit(a)[..., None]))
        sign = np.where(rng.random(size=(D, N)) < 0.5, -1.0, 1.0)
        u.move.beta.copy_(f32((sign + 0.2 * rng.normal(size=(D, N)))[..., None]))
        u.move.gamma.copy_(f32(rng.normal(size=(D, N))))
        u.move.omega.copy_(f32(rng.normal(size=D)))
        init_linear(u.hx_proj)
        u.q_router.temp.copy_(f32(np.log(rng.uniform(0.5, 2.0, size=1))))
        init_linear(u.mx_proj)
        u.gamma.copy_(f32(1.0 + 0.2 * rng.normal(size=(2, Z))))
        u.beta.copy_(f32(0.2 * rng.normal(size=(2, Z))))
        init_linear(u.h_proj)
        if cfg.rel_pos_bias == "simple":
            u.rel_pos_bias.rel_pos_bias.copy_(
                f32(rng.normal(0.0, 0.3, size=2 * cfg.max_positions - 1)))
        if layer.nffn is not None:
            init_norm(layer.nffn.norm)
            init_linear(layer.nffn.fc1)
            init_linear(layer.nffn.fc2)
    if dec.final_norm is not None:
        init_norm(dec.final_norm)


def router_diffs(model, sequences, layer):
    """Pre-bias router logit differences g1 - g0 of `layer` over every (sequence, horizon)."""
    u = model.decoder.layers[layer].slag_layer
    b = u.hx_proj.bias.detach().double()
    bias_diff = float(b[1] - b[0])
    out = []
    for tokens in sequences:
        for horizon in HORIZONS:
            g = model(tokens, horizon)["router_logits"][layer]
            out.append((g[:, 1] - g[:, 0]).numpy() - bias_diff)
    return np.concatenate(out)


@torch.no_grad()
def set_bias_diff(model, layer, diff):
    """Sets the router bias rows 0-1 of `layer` so that b1 - b0 = diff (symmetrically)."""
    b = model.decoder.layers[layer].slag_layer.hx_proj.bias
    mid = 0.5 * float(b[0] + b[1])
    b[0] = mid - 0.5 * diff
    b[1] = mid + 0.5 * diff


@torch.no_grad()
def tune_routers(model, sequences):
    """Layer by layer (a layer's router input depends only on earlier layers): scale the
    router rows to a decisive spread, then put the threshold in the widest gap of the
    router logit differences within the RATE_SEARCH quantiles."""
    for l, layer in enumerate(model.decoder.layers):
        u = layer.slag_layer
        tau = math.exp(float(u.q_router.temp))
        d = router_diffs(model, sequences, l)
        scale = ROUTER_SPREAD * tau / float(np.std(d))
        u.hx_proj.weight[:2] = u.hx_proj.weight[:2] * scale
        d = router_diffs(model, sequences, l)
        v = np.sort(d)
        n = len(v)
        best = None
        for k in range(n - 1):  # threshold between v[k] and v[k+1]: share above = (n-k-1)/n
            share = (n - k - 1) / n
            if RATE_SEARCH[0] <= share <= RATE_SEARCH[1]:
                gap = v[k + 1] - v[k]
                if best is None or gap > best[0]:
                    best = (gap, 0.5 * (v[k] + v[k + 1]))
        set_bias_diff(model, l, -best[1])


@torch.no_grad()
def force_routers(model, sequences, on):
    """Router biases such that every token activates (on) or none does, layer by layer,
    with a clear margin: the nearest token sits 2 temperatures past the threshold."""
    for l, layer in enumerate(model.decoder.layers):
        tau = math.exp(float(layer.slag_layer.q_router.temp))
        d = router_diffs(model, sequences, l)
        diff = (-float(d.min()) + 2.0 * tau) if on else (-float(d.max()) - 2.0 * tau)
        set_bias_diff(model, l, diff)


# ======================================================================================
# Self-check (i): a separate float64 step-by-step recurrent implementation (numpy).
# ======================================================================================
def np_silu(x):
    return x / (1.0 + np.exp(-x))


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_norm(params, prefix, kind, x, affine=True):
    if kind == "layernorm":
        c = x - x.mean()
        y = c / math.sqrt(float((c * c).mean()) + 1e-5)
        if affine:
            y = y * params[prefix + ".norm.weight"] + params[prefix + ".norm.bias"]
        return y
    y = x / math.sqrt(float((x * x).mean()) + 1e-5)
    if affine:
        key = ".norm.scalar" if kind == "scalenorm" else ".norm.weight"
        y = y * params[prefix + key]
    return y


class RecurrentDecoder:
    """One token at a time, state per layer: EMA state (D x N), FIFO of (k, v, t), and for
    the `trained` horizon a ring of the last T normalised inputs. act_bias: None or one
    router activation bias per layer (added to router logit 0 before the temperature)."""

    def __init__(self, params, cfg: SeqBoatConfig, horizon, act_bias=None):
        self.p = params
        self.cfg = cfg
        self.horizon = horizon
        self.act_bias = [0.0] * cfg.layers if act_bias is None else [float(b) for b in act_bias]
        self.truncated = horizon == "trained" and cfg.truncation_length > 0
        D, N = cfg.embed_dim, cfg.n_dim
        self.ema = [np.zeros((D, N)) for _ in range(cfg.layers)]
        self.ring = [deque() for _ in range(cfg.layers)]
        self.fifo = [deque() for _ in range(cfg.layers)]
        self.t = 0

    def step(self, token):
        cfg, P, t = self.cfg, self.p, self.t
        D, N, Z, H, w = cfg.embed_dim, cfg.n_dim, cfg.z_dim, cfg.hidden_dim, cfg.chunk_size
        x = P["embed_tokens.weight"][token].copy()
        if cfg.scale_embedding:
            x = x * math.sqrt(D)
        if cfg.normalize_embedding:
            x = np_norm(P, "embed_norm", cfg.norm_type, x)
        decisions, confidences, margins = [], [], []
        for l in range(cfg.layers):
            pre = "layers.%d.slag_layer." % l
            x_in = x
            u = np_norm(P, pre + "norm", cfg.norm_type, x) if cfg.normalize_before else x
            p = np_sigmoid(P[pre + "move.delta"][:, :, 0])
            a = np_sigmoid(P[pre + "move.alpha"][:, :, 0])
            q = 1.0 - p * a
            beta = P[pre + "move.beta"][:, :, 0]
            if not self.truncated:
                self.ema[l] = p * beta * u[:, None] + q * self.ema[l]
                s = self.ema[l]
            else:
                T = cfg.truncation_length
                ring = self.ring[l]
                old = ring.popleft() if len(ring) == T else np.zeros(D)
                ring.append(u.copy())
                self.ema[l] = q * self.ema[l] + u[:, None] - (q ** T) * old[:, None]
                s = p * beta * self.ema[l]
            m = (s * P[pre + "move.gamma"]).sum(axis=1) * math.sqrt(1.0 / N) \
                + P[pre + "move.omega"] * u
            mx = np_silu(m)
            o = P[pre + "hx_proj.weight"] @ mx + P[pre + "hx_proj.bias"]
            g, hx = o[:2], o[2:]
            g = np.array([g[0] + self.act_bias[l], g[1]])
            tau = math.exp(float(P[pre + "q_router.temp"][0]))
            e = np.exp((g - g.max()) / tau)
            pr = e / e.sum()
            active = bool(pr[1] > pr[0])
            conf = float(max(pr[0], pr[1]))
            decisions.append(active)
            confidences.append(conf)
            margins.append(abs(float(pr[1] - pr[0])))
            gau = np.zeros(D)
            if active:
                base = np_silu(P[pre + "mx_proj.weight"] @ mx + P[pre + "mx_proj.bias"])
                z, r, v = base[:Z], base[Z:Z + H], base[Z + H:]
                qv = z * P[pre + "gamma"][0] + P[pre + "beta"][0]
                kv = z * P[pre + "gamma"][1] + P[pre + "beta"][1]
                if cfg.rel_pos_bias == "rotary":
                    theta = np.array([10000.0 ** (-2.0 * i / Z) for i in range(Z // 2)])
                    rot = np.exp(1j * (t * theta))
                    qc = (qv[0::2] + 1j * qv[1::2]) * rot
                    kc = (kv[0::2] + 1j * kv[1::2]) * rot
                    qv = np.stack([qc.real, qc.imag], axis=1).reshape(Z)
                    kv = np.stack([kc.real, kc.imag], axis=1).reshape(Z)
                entries = list(self.fifo[l]) + [(kv, v, t)]
                scores = []
                for kj, _, tj in entries:
                    sc = float(qv @ kj)
                    sc = sc / math.sqrt(Z) if cfg.attention_activation == "softmax" else sc / w
                    if cfg.rel_pos_bias == "simple":
                        Pm = cfg.max_positions
                        idx = min(max(Pm - 1 + tj - t, 0), 2 * Pm - 2)
                        sc += float(P[pre + "rel_pos_bias.rel_pos_bias"][idx])
                    scores.append(sc)
                scores = np.array(scores)
                if cfg.attention_activation == "softmax":
                    ex = np.exp(scores - scores.max())
                    weights = ex / ex.sum()
                elif cfg.attention_activation == "relu2":
                    weights = np.maximum(scores, 0.0) ** 2
                else:
                    weights = np.array([0.5 * (1.0 + math.erf((sc - 0.707107) /
                                                              (0.282095 * math.sqrt(2.0))))
                                        for sc in scores])
                h = np.zeros(H)
                for wj, (_, vj, _) in zip(weights, entries):
                    h += wj * vj
                y = P[pre + "h_proj.weight"] @ (h * r) + P[pre + "h_proj.bias"]
                gau = conf * y
                self.fifo[l].append((kv, v, t))
                if len(self.fifo[l]) > w:
                    self.fifo[l].popleft()
            x = np_silu(hx + gau + x_in)
            if not cfg.normalize_before:
                x = np_norm(P, pre + "norm", cfg.norm_type, x)
            if cfg.ffn_dim > 0:
                fp = "layers.%d.nffn." % l
                hin = np_norm(P, fp + "norm", cfg.norm_type, x) if cfg.normalize_before else x
                hid = np_silu(P[fp + "fc1.weight"] @ hin + P[fp + "fc1.bias"])
                x = x + P[fp + "fc2.weight"] @ hid + P[fp + "fc2.bias"]
                if not cfg.normalize_before:
                    x = np_norm(P, fp + "norm", cfg.norm_type, x)
        if cfg.normalize_before:
            x = np_norm(P, "final_norm", cfg.norm_type, x, affine=cfg.final_norm_affine)
        out = P["embed_tokens.weight"] if cfg.tied_embeddings else P["output_projection.weight"]
        self.t += 1
        return out @ x, decisions, confidences, margins


def recurrent_forward(model, tokens, horizon, act_bias=None):
    params = {k[len("decoder."):]: v.detach().double().numpy().copy()
              for k, v in model.state_dict().items()}
    dec = RecurrentDecoder(params, model.cfg, horizon, act_bias)
    rows = [dec.step(int(tok)) for tok in tokens]
    return {
        "logits": np.stack([r[0] for r in rows]),
        "activations": np.array([r[1] for r in rows]).T,
        "confidences": np.array([r[2] for r in rows]).T,
        "margins": np.array([r[3] for r in rows]).T,
    }


# ======================================================================================
# Writers.
# ======================================================================================
def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 contiguous numpy array) in file order."""
    header = OrderedDict()
    header["__metadata__"] = OrderedDict(metadata)
    offset = 0
    blobs = []
    for name, arr in tensors:
        assert arr.dtype == np.float32
        data = np.ascontiguousarray(arr).astype("<f4", copy=False).tobytes(order="C")
        header[name] = OrderedDict([("dtype", "F32"), ("shape", list(arr.shape)),
                                    ("data_offsets", [offset, offset + len(data)])])
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Independent re-read for a round-trip check."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=OrderedDict)
    data = raw[8 + n:]
    out = OrderedDict()
    expect = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        assert b == expect, name
        expect = e
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"])
    assert expect == len(data)
    return header["__metadata__"], out


def model_file_tensors(model):
    """Every tensor of the fairseq state dict under its name without `decoder.`, in state
    dict order, minus `version` and (when tied) `output_projection.weight`."""
    out = []
    for k, v in model.state_dict().items():
        name = k[len("decoder."):]
        if name == "version":
            continue
        if name == "output_projection.weight" and model.cfg.tied_embeddings:
            continue
        out.append((name, v.detach().cpu().numpy().astype(np.float32)))
    return out


def write_checkpoint(path, model, args):
    sd = model.fairseq_state_dict()
    if model.cfg.tied_embeddings:
        assert sd["decoder.output_projection.weight"] is sd["decoder.embed_tokens.weight"]
    exp_avg = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float32)
    exp_avg_sq = torch.tensor([1e-4, 2e-4, 3e-4], dtype=torch.float32)
    ckpt = {
        "args": args,
        "model": sd,
        "optimizer_history": [{
            "criterion_name": "CrossEntropyCriterion",
            "optimizer_name": "Adam",
            "lr_scheduler_state": {"best": 1.5},
            "num_updates": 100,
        }],
        "extra_state": {
            "epoch": 3,
            "val_loss": np.float64(1.23),
            "train_iterator": {"epoch": 3, "iterations_in_epoch": 10},
        },
        "last_optimizer_state": {
            "state": {0: {"step": 100, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}},
            "param_groups": [{"lr": 0.001, "betas": (0.9, 0.98), "params": [0]}],
        },
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


# ======================================================================================
# Sequences.
# ======================================================================================
def make_sequences(spec, tok: Tokenizer, V, seed):
    rng = np.random.Generator(np.random.PCG64(seed))
    seqs = []
    for k, length in enumerate(SEQ_LENGTHS):
        if k == 0:
            if spec["style"] == "word":
                ids = tok.encode(word_text(rng, 3 * length))
            else:
                ids = tok.encode(spec["text"] * 4)
            ids = [EOS] + ids[:length - 1]
        else:
            ids = [EOS] + [int(v) for v in rng.integers(0, V, size=length - 1)]
            # a few specials (<s>, </s>, <unk>) and the largest id on purpose
            for pos, val in ((3, BOS), (7, EOS), (11, UNK), (length - 2, V - 1)):
                ids[pos] = val
        ids = [EOS if i == PAD else i for i in ids]
        assert len(ids) == length and ids[0] == EOS
        assert all(0 <= i < V and i != PAD for i in ids)
        seqs.append(np.array(ids, dtype=np.int32))
    return seqs


# ======================================================================================
# Building, checking and writing one model.
# ======================================================================================
def build_model(name, spec, attempt):
    file_symbols, lines = dict_lines(spec["vocab"](), spec["seed"])
    V = len(file_symbols) + 4
    args = base_args(**spec["args"])
    cfg = SeqBoatConfig.from_fairseq_args(args, V)
    tok = Tokenizer(spec["style"], file_symbols)
    seqs = make_sequences(spec, tok, V, spec["seed"] + 1)
    torch.manual_seed(0)  # nothing random should come from torch; set anyway
    model = SeqBoatLM(cfg)
    rng = np.random.Generator(np.random.PCG64(spec["seed"] + 100 * attempt + 7))
    initialise(model, rng)
    tune_routers(model, seqs)
    return dict(name=name, style=spec["style"], file_symbols=file_symbols, dict_lines=lines,
                args=args, cfg=cfg, tok=tok, seqs=seqs, model=model)


def run_all(model, seqs):
    return [{h: model(s, h) for h in HORIZONS} for s in seqs]


def agreement(model, tokens, horizon, par, act_bias=None):
    """Self-check (i) and the fp32 reachability check of the parallel run `par`. Returns
    (what failed or None, recurrent vs parallel max diff, float32 vs float64 max diff)."""
    # (i) the two formulations agree
    rec = recurrent_forward(model, tokens, horizon, act_bias)
    if not np.array_equal(par["activations"].numpy(), rec["activations"]):
        return "decisions differ between parallel and recurrent", None, None
    d1 = float(np.abs(par["logits"].numpy() - rec["logits"]).max())
    d2 = float(np.abs(par["confidences"].numpy() - rec["confidences"]).max())
    if d1 > RECURRENT_TOL or d2 > RECURRENT_TOL:
        return "recurrent vs parallel logits %g confidences %g" % (d1, d2), None, None
    # fp32 reachability: same decisions, close logits
    p32 = model(tokens, horizon, dtype=torch.float32, act_bias=act_bias)
    if not torch.equal(p32["activations"], par["activations"]):
        return "float32 decisions differ", None, None
    d3 = float((p32["logits"].double() - par["logits"]).abs().max())
    if d3 > FP32_LOGIT_TOL:
        return "float32 logits off by %g" % d3, None, None
    d4 = float((p32["confidences"].double() - par["confidences"]).abs().max())
    return None, max(d1, d2), max(d3, d4)


def check_model(built, results, forced=None):
    """Self-checks (i)-(iii) plus the fp32 reachability check; returns statistics."""
    model, cfg, seqs, name = built["model"], built["cfg"], built["seqs"], built["name"]
    L = cfg.layers
    stats = OrderedDict()
    worst_rec = 0.0
    worst_fp32 = 0.0
    for k, s in enumerate(seqs):
        for h in HORIZONS:
            problem, d_rec, d_fp32 = agreement(model, s, h, results[k][h])
            assert problem is None, "%s seq%d %s: %s" % (name, k, h, problem)
            worst_rec = max(worst_rec, d_rec)
            worst_fp32 = max(worst_fp32, d_fp32)
        # (iii) exact == trained on the first T positions
        T = cfg.truncation_length
        n = min(T, len(s)) if T > 0 else len(s)
        ex, tr = results[k]["exact"], results[k]["trained"]
        assert torch.equal(ex["activations"][:, :n], tr["activations"][:, :n]), name
        d4 = float((ex["logits"][:n] - tr["logits"][:n]).abs().max())
        d5 = float((ex["confidences"][:, :n] - tr["confidences"][:, :n]).abs().max())
        assert d4 <= 1e-12 and d5 <= 1e-12, "%s seq%d: exact != trained before T" % (name, k)
    # (ii) rates and margins
    rates = OrderedDict()
    min_margin = 1.0
    decisive_share = 1.0
    for h in HORIZONS:
        acts = np.concatenate([results[k][h]["activations"].numpy() for k in range(len(seqs))], 1)
        margins = np.concatenate([results[k][h]["margins"].numpy() for k in range(len(seqs))], 1)
        rates[h] = [round(float(acts[l].mean()), 4) for l in range(L)]
        min_margin = min(min_margin, float(margins.min()))
        for l in range(L):
            decisive_share = min(decisive_share, float((margins[l] > DECISIVE).mean()))
            if forced is None:
                assert RATE_RANGE[0] <= acts[l].mean() <= RATE_RANGE[1], \
                    "%s %s layer %d: activation rate %.3f" % (name, h, l, acts[l].mean())
            elif forced:
                assert acts[l].all(), "%s: not every token activates" % name
            else:
                assert not acts[l].any(), "%s: some token activates" % name
        if forced is None:
            assert decisive_share >= DECISIVE_SHARE, "%s: share decisive %.3f" % (name, decisive_share)
    assert min_margin > MIN_MARGIN_REQUIRED, "%s: min margin %g" % (name, min_margin)
    differing = sum(int((results[k]["exact"]["activations"] != results[k]["trained"]["activations"])
                        .sum()) for k in range(len(seqs)))
    max_logit = max(float(results[k][h]["logits"].abs().max())
                    for k in range(len(seqs)) for h in HORIZONS)
    stats["activation_rate"] = rates
    stats["activated_tokens"] = OrderedDict(
        ("seq%d" % k, OrderedDict((h, [int(c) for c in results[k][h]["activations"].sum(1)])
                                  for h in HORIZONS)) for k in range(len(seqs)))
    stats["min_margin"] = min_margin
    stats["share_margin_above_0.1"] = round(decisive_share, 4)
    stats["decisions_differing_exact_vs_trained"] = differing
    stats["max_abs_logit"] = round(max_logit, 4)
    stats["recurrent_vs_parallel_max_diff"] = worst_rec
    stats["float32_vs_float64_max_diff"] = worst_fp32
    return stats


def model_ok(built, results):
    """Seed acceptance: margins comfortably away from the knife edge, rates in range."""
    cfg = built["cfg"]
    for k in range(len(built["seqs"])):
        for h in HORIZONS:
            if float(results[k][h]["margins"].min()) <= MIN_MARGIN_TARGET:
                return False
    for h in HORIZONS:
        acts = np.concatenate([r[h]["activations"].numpy() for r in results], 1)
        margins = np.concatenate([r[h]["margins"].numpy() for r in results], 1)
        for l in range(cfg.layers):
            if not RATE_RANGE[0] <= acts[l].mean() <= RATE_RANGE[1]:
                return False
            if (margins[l] > DECISIVE).mean() < DECISIVE_SHARE:
                return False
    return True


def layer_rates(runs):
    """Activation rate per layer over the runs (one per sequence) of a model."""
    return np.concatenate([r["activations"].numpy() for r in runs], 1).mean(1)


def try_biases(built, biases, base_rates):
    """Runs the activation-bias setting `biases` (one per layer) on every sequence and checks
    it like the unbiased fixtures. Returns (runs, figures), or None when the setting does not
    qualify: every margin > MIN_MARGIN_TARGET, no layer at 0% or 100%, the rate moved by
    BIAS_RATE_SHIFT against the bias's sign (a scalar: the mean over layers; a per-layer
    list: each layer it biases), and the recurrent and float32 checks pass."""
    model, seqs = built["model"], built["seqs"]
    runs = [model(s, BIAS_HORIZON, act_bias=biases) for s in seqs]
    rates = layer_rates(runs)
    min_margin = min(float(r["margins"].min()) for r in runs)
    if min_margin <= MIN_MARGIN_TARGET or not all(0.0 < r < 1.0 for r in rates):
        return None
    if len(set(biases)) == 1:
        moves = [(biases[0], rates.mean() - base_rates.mean())]
    else:
        moves = [(b, r - r0) for b, r, r0 in zip(biases, rates, base_rates) if b != 0.0]
    if any(-math.copysign(1.0, b) * move < BIAS_RATE_SHIFT for b, move in moves):
        return None
    worst_rec = worst_fp32 = 0.0
    for s, par in zip(seqs, runs):
        problem, d_rec, d_fp32 = agreement(model, s, BIAS_HORIZON, par, biases)
        if problem is not None:
            return None
        worst_rec, worst_fp32 = max(worst_rec, d_rec), max(worst_fp32, d_fp32)
    return runs, OrderedDict([("rates", rates), ("min_margin", min_margin),
                              ("rec", worst_rec), ("fp32", worst_fp32)])


def choose_biases(built, results):
    """The three activation-bias settings of a model, index j: 0 a negative scalar (more
    activations), 1 a positive one (fewer), 2 a per-layer list (-s, 0, +s, -s, ...), each
    with the first magnitude s of BIAS_MAGNITUDES that try_biases accepts.
    Returns [(biases, runs, figures)] in j order."""
    L = built["cfg"].layers
    base_rates = layer_rates([r[BIAS_HORIZON] for r in results])
    patterns = ([-1.0] * L, [1.0] * L, [(-1.0, 0.0, 1.0)[l % 3] for l in range(L)])
    chosen = []
    for j, pattern in enumerate(patterns):
        for s in BIAS_MAGNITUDES:
            biases = [s * f for f in pattern]
            tried = try_biases(built, biases, base_rates)
            if tried is not None:
                chosen.append((biases,) + tried)
                break
        else:
            raise RuntimeError("%s: no acceptable activation bias %d" % (built["name"], j))
    return chosen


def write_biased(out_dir, folder, chosen):
    d = os.path.join(out_dir, folder)
    for j, (_, runs, _) in enumerate(chosen):
        for k, r in enumerate(runs):
            stem = os.path.join(d, "seq%d.%s.bias%d." % (k, BIAS_HORIZON, j))
            np.save(stem + "logits.npy", r["logits"].numpy().astype(np.float32))
            np.save(stem + "activations.npy", r["activations"].numpy().astype(np.uint8))
            np.save(stem + "confidences.npy", r["confidences"].numpy().astype(np.float32))


def write_model(out_dir, folder, built, results):
    d = os.path.join(out_dir, folder)
    os.makedirs(d, exist_ok=True)
    model, cfg = built["model"], built["cfg"]
    with open(os.path.join(d, "dict.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(built["dict_lines"]) + "\n")
    ckpt = os.path.join(d, "checkpoint.pt")
    write_checkpoint(ckpt, model, built["args"])
    metadata = OrderedDict([
        ("format", "seqboat"),
        ("format_version", "1"),
        ("config", json.dumps(cfg.to_dict(), separators=(",", ":"))),
        ("tokenizer", json.dumps(OrderedDict([("style", built["style"]),
                                              ("symbols", built["tok"].symbols)]),
                                 separators=(",", ":"), ensure_ascii=False)),
        ("source_sha256", sha256_file(ckpt)),
        ("converter_version", CONVERTER_VERSION),
    ])
    st_path = os.path.join(d, "model.safetensors")
    tensors = model_file_tensors(model)
    write_safetensors(st_path, tensors, metadata)
    meta_back, tensors_back = read_safetensors(st_path)
    assert meta_back == metadata and list(tensors_back) == [n for n, _ in tensors]
    for n, a in tensors:
        assert np.array_equal(tensors_back[n], a), n
    # the checkpoint loads back into an identical model
    loaded = torch.load(ckpt)
    m2 = SeqBoatLM(SeqBoatConfig.from_fairseq_args(loaded["args"], cfg.vocab_size))
    m2.load_state_dict(loaded["model"])
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    for k, s in enumerate(built["seqs"]):
        np.save(os.path.join(d, "seq%d.tokens.npy" % k), s.astype(np.int32))
        for h in HORIZONS:
            r = results[k][h]
            np.save(os.path.join(d, "seq%d.%s.logits.npy" % (k, h)),
                    r["logits"].numpy().astype(np.float32))
            np.save(os.path.join(d, "seq%d.%s.activations.npy" % (k, h)),
                    r["activations"].numpy().astype(np.uint8))
            np.save(os.path.join(d, "seq%d.%s.confidences.npy" % (k, h)),
                    r["confidences"].numpy().astype(np.float32))


# ======================================================================================
# Tokenizer cases.
# ======================================================================================
TOKENIZER_TEXTS = OrderedDict()
TOKENIZER_TEXTS["byte"] = [
    "",
    "hello world",
    "a\nb",
    "\n",
    "\n\n\n",
    "line one\nline two\n",
    "caf\u00e9 5\u20ac \u4e2d\u6587",
    "emoji \U0001F600!",
    "tab\there\r\n",
    "ctrl \x01\x7f end",
    "Arabic \u0639 and Hebrew \u05e9",  # lead bytes D8 / D7: D8 unknown, D7 known
    "\u00ff\u0416\u00df",
    "[[links]] {{templates}} <page>",
]
TOKENIZER_TEXTS["char"] = [
    "",
    "abc",
    "a\nb",
    "\n\n\n",
    "caf\u00e9",
    "stra\u00dfe 5\u20ac",
    "\u4e2d\u6587\u65e5\u672c",
    "\U0001F600\U0001F601",
    "hello world",  # the space has no symbol
    "She said \"hi\" to C:\\temp",
    "e\u0301 vs \u00e9",  # combining acute accent: its own (unknown) code point
    "\u0416\u00ff\n",
    "ABCSTZ",
]
TOKENIZER_TEXTS["word"] = [
    "",
    "the cat sat",
    "the  cat\tsat",
    "the\ncat\n",
    "\n\n\n",
    "caf\u00e9 na\u00efve \u00fcber r\u00e9sum\u00e9 \u6771\u4eac",
    "zebra the unicorn",
    "The cat",
    "a\r\nb",
    "  leading and trailing  ",
    "the cat , sat . 2023 !",
    "one\n\ntwo",
    "cafe caf\u00e9",
]


def tokenizer_cases(dicts):
    out = OrderedDict()
    for folder, built in dicts:
        tok = built["tok"]
        cases = [OrderedDict([("text", t), ("ids", tok.encode(t))])
                 for t in TOKENIZER_TEXTS[tok.style]]
        assert any(3 in c["ids"] for c in cases) and any(2 in c["ids"] for c in cases)
        out[folder] = OrderedDict([("style", tok.style), ("dict", folder + "/dict.txt"),
                                   ("cases", cases)])
    return out


# ======================================================================================
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="fixtures folder (tests/fixtures)")
    opts = ap.parse_args()
    out_dir = opts.out
    os.makedirs(out_dir, exist_ok=True)
    # Start clean, but only remove what this script writes (safe with a wrong --out).
    for entry in list(MODELS) + list(FORCED):
        if os.path.isdir(os.path.join(out_dir, entry)):
            shutil.rmtree(os.path.join(out_dir, entry))
    for entry in ("manifest.json", "tokenizer_cases.json"):
        if os.path.exists(os.path.join(out_dir, entry)):
            os.remove(os.path.join(out_dir, entry))

    manifest = OrderedDict()
    manifest["generator"] = "tests/reference/make_fixtures.py"
    manifest["converter_version"] = CONVERTER_VERSION
    manifest["horizons"] = list(HORIZONS)
    manifest["files_per_sequence"] = ["seq{k}.tokens.npy (int32 [T])",
                                      "seq{k}.{horizon}.logits.npy (float32 [T, V])",
                                      "seq{k}.{horizon}.activations.npy (uint8 [L, T])",
                                      "seq{k}.{horizon}.confidences.npy (float32 [L, T])",
                                      "seq{k}.exact.bias{j}.logits.npy (float32 [T, V]), "
                                      "only for models with activation_biases; j indexes them",
                                      "seq{k}.exact.bias{j}.activations.npy (uint8 [L, T])",
                                      "seq{k}.exact.bias{j}.confidences.npy (float32 [L, T])"]
    manifest["models"] = []
    dict_models = []

    def record(folder, built, stats, derived_from=None, attempt=0):
        entry = OrderedDict()
        entry["folder"] = folder
        if derived_from:
            entry["derived_from"] = derived_from
        entry["style"] = built["style"]
        entry["config"] = built["cfg"].to_dict()
        entry["sequence_lengths"] = [int(len(s)) for s in built["seqs"]]
        entry["init_attempt"] = attempt
        entry.update(stats)
        manifest["models"].append(entry)
        r = stats["activation_rate"]
        print("%-22s rates exact %s trained %s min|p1-p0| %.3g  decisive %.2f  "
              "exact!=trained %d  rec %.1e  fp32 %.1e  max|logit| %.2f" %
              (folder, r["exact"], r["trained"], stats["min_margin"],
               stats["share_margin_above_0.1"], stats["decisions_differing_exact_vs_trained"],
               stats["recurrent_vs_parallel_max_diff"], stats["float32_vs_float64_max_diff"],
               stats["max_abs_logit"]))

    for name, spec in MODELS.items():
        for attempt in range(20):
            built = build_model(name, spec, attempt)
            results = run_all(built["model"], built["seqs"])
            if model_ok(built, results):
                break
        else:
            raise RuntimeError("%s: no acceptable initialisation in 20 attempts" % name)
        stats = check_model(built, results)
        write_model(out_dir, name, built, results)
        if name in BIASED_MODELS:
            chosen = choose_biases(built, results)
            write_biased(out_dir, name, chosen)
            stats["activation_biases"] = [biases for biases, _, _ in chosen]
            stats["biased_activation_rate"] = [[round(float(r), 4) for r in fig["rates"]]
                                               for _, _, fig in chosen]
            for j, (biases, _, fig) in enumerate(chosen):
                print("%-22s bias%d %s rates %s min|p1-p0| %.3g  rec %.1e  fp32 %.1e" %
                      (name, j, biases, stats["biased_activation_rate"][j], fig["min_margin"],
                       fig["rec"], fig["fp32"]))
        record(name, built, stats, attempt=attempt)
        dict_models.append((name, built))

        for forced_name, (base, on) in FORCED.items():
            if base != name:
                continue
            fb = build_model(name, spec, attempt)  # the very same weights ...
            force_routers(fb["model"], fb["seqs"], on)  # ... but the router biases
            fb["name"] = forced_name
            fres = run_all(fb["model"], fb["seqs"])
            fstats = check_model(fb, fres, forced=on)
            write_model(out_dir, forced_name, fb, fres)
            record(forced_name, fb, fstats, derived_from=name, attempt=attempt)

    with open(os.path.join(out_dir, "tokenizer_cases.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_cases(dict_models), f, ensure_ascii=False, indent=1)
        f.write("\n")

    total = os.path.getsize(os.path.join(out_dir, "tokenizer_cases.json"))
    for entry in list(MODELS) + list(FORCED):  # what this script writes, not e.g. converter/
        for root, _, files in os.walk(os.path.join(out_dir, entry)):
            for fn in files:
                total += os.path.getsize(os.path.join(root, fn))
    manifest["fixture_bytes_without_manifest"] = total
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %s (%.2f MB)" % (out_dir, total / 1e6))


if __name__ == "__main__":
    main()
