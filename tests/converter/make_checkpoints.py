#!/usr/bin/python3
"""Writes the converter's test checkpoints with real torch.save (Debian python3-torch 1.13).

    cd /work/main && /usr/bin/python3 tests/converter/make_checkpoints.py \
        --out tests/fixtures/converter --fuzz_corpus converter/fuzz/corpus

Every file is small (a few KB) and committed; running the script again gives byte-identical
files (fixed seeds, fixed zip timestamps). The state dicts have SeqBoat's names and shapes
(MODEL.md) with random values: the math is covered by the reference fixtures in
tests/fixtures/<model>/, these cover serialization (zip layouts, pickle protocols, shared and
strided storages, dtypes, training leftovers, cfg instead of args) and bad input.

For each good checkpoint X.pt the script also writes X.expected.safetensors: a valid model
file (MODEL_FILE.md) with the tensors the converter must produce in fp32 (contiguous copies of
the checkpoint's values), which the C++ tests compare with exactly and the model-file fuzzer
uses as a seed.

    /usr/bin/python3 tests/converter/make_checkpoints.py --enwik8 /tmp/enwik8.pt

writes instead a 39M-parameter checkpoint with the enwik8 configuration of the paper
(L=14, D=616, Z=128, H=1232, N=16, w=1024, V=260) plus Adam state, and its dict.txt beside
it, for measuring conversion time and memory. It is not committed.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile
from argparse import Namespace
from collections import OrderedDict

import numpy as np
import torch

sys.dont_write_bytecode = True

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
FIXED_DATE = (2020, 1, 1, 0, 0, 0)


# ------------------------------------------------------------------------------------------
# Configurations and state dicts.
# ------------------------------------------------------------------------------------------
def tiny_args(**overrides):
    """A fairseq-style Namespace for a tiny SeqBoat LM, with training args around it."""
    args = dict(
        arch="slag_lm",
        task="language_modeling",
        optimizer="adam",
        adam_betas="(0.9, 0.98)",
        lr=[0.001],
        seed=1,
        data="data-bin/tiny",
        dropout=0.1,
        decoder_embed_dim=8,
        decoder_input_dim=8,
        decoder_z_dim=4,
        decoder_hidden_dim=6,
        decoder_n_dim=2,
        decoder_layers=2,
        decoder_chunk_size=4,
        decoder_ffn_embed_dim=0,
        truncation_length=16,
        rel_pos_bias="rotary",
        max_target_positions=32,
        attention_activation_fn="softmax",
        activation_fn="silu",
        normalization_type="layernorm",
        normalize_before=True,
        no_affine_final_norm=False,
        normalize_embedding=False,
        no_scale_embedding=False,
        share_decoder_input_output_embed=True,
        adaptive_input=False,
        adaptive_softmax_cutoff=None,
        local_pos=False,
        init_temp_scale=0.3,
    )
    args.update(overrides)
    return Namespace(**args)


def dims(args, vocab_size):
    ffn = args.decoder_ffn_embed_dim if getattr(args, "decoder_ffn_embed_dim", 0) > 0 else 0
    return dict(D=args.decoder_embed_dim, Z=args.decoder_z_dim, H=args.decoder_hidden_dim,
                N=args.decoder_n_dim, L=args.decoder_layers, F=ffn, V=vocab_size,
                P=args.max_target_positions)


def norm_params(prefix, kind, D, gen, out):
    if kind == "layernorm":
        out[prefix + ".weight"] = 1.0 + 0.1 * torch.randn(D, generator=gen)
        out[prefix + ".bias"] = 0.1 * torch.randn(D, generator=gen)
    elif kind == "scalenorm":
        out[prefix + ".scalar"] = torch.ones(1) + 0.1 * torch.randn(1, generator=gen)
    else:
        out[prefix + ".weight"] = 1.0 + 0.1 * torch.randn(D, generator=gen)


def state_dict(args, vocab_size, seed, dtype=torch.float32):
    """An OrderedDict in fairseq's order (the version buffer first) with torch's
    `_metadata` attribute, like Module.state_dict() returns."""
    d = dims(args, vocab_size)
    D, Z, H, N, L, F, V, P = (d[k] for k in "DZHNLFVP")
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    sd["decoder.version"] = torch.Tensor([3])
    embed = 0.3 * torch.randn(V, D, generator=gen)
    embed[1] = 0  # <pad>
    sd["decoder.embed_tokens.weight"] = embed
    if args.normalize_embedding:
        norm_params("decoder.embed_norm.norm", args.normalization_type, D, gen, sd)
    for i in range(L):
        u = "decoder.layers.%d.slag_layer." % i
        norm_params(u + "norm.norm", args.normalization_type, D, gen, sd)
        sd[u + "move.delta"] = torch.randn(D, N, 1, generator=gen)
        sd[u + "move.alpha"] = torch.randn(D, N, 1, generator=gen)
        sd[u + "move.beta"] = torch.randn(D, N, 1, generator=gen)
        sd[u + "move.gamma"] = torch.randn(D, N, generator=gen)
        sd[u + "move.omega"] = torch.randn(D, generator=gen)
        sd[u + "gamma"] = 0.3 * torch.randn(2, Z, generator=gen)
        sd[u + "beta"] = 0.1 * torch.randn(2, Z, generator=gen)
        if args.rel_pos_bias == "simple":
            sd[u + "rel_pos_bias.rel_pos_bias"] = 0.1 * torch.randn(2 * P - 1, generator=gen)
        sd[u + "q_router.temp"] = torch.tensor([0.5])
        sd[u + "mx_proj.weight"] = 0.3 * torch.randn(Z + 2 * H, D, generator=gen)
        sd[u + "mx_proj.bias"] = 0.1 * torch.randn(Z + 2 * H, generator=gen)
        sd[u + "hx_proj.weight"] = 0.3 * torch.randn(2 + D, D, generator=gen)
        sd[u + "hx_proj.bias"] = 0.1 * torch.randn(2 + D, generator=gen)
        sd[u + "h_proj.weight"] = 0.3 * torch.randn(D, H, generator=gen)
        sd[u + "h_proj.bias"] = 0.1 * torch.randn(D, generator=gen)
        if F > 0:
            f = "decoder.layers.%d.nffn." % i
            norm_params(f + "norm.norm", args.normalization_type, D, gen, sd)
            sd[f + "fc1.weight"] = 0.3 * torch.randn(F, D, generator=gen)
            sd[f + "fc1.bias"] = 0.1 * torch.randn(F, generator=gen)
            sd[f + "fc2.weight"] = 0.3 * torch.randn(D, F, generator=gen)
            sd[f + "fc2.bias"] = 0.1 * torch.randn(D, generator=gen)
    if args.normalize_before and not args.no_affine_final_norm:
        norm_params("decoder.final_norm.norm", args.normalization_type, D, gen, sd)
    if args.share_decoder_input_output_embed:
        sd["decoder.output_projection.weight"] = sd["decoder.embed_tokens.weight"]
    else:
        sd["decoder.output_projection.weight"] = 0.3 * torch.randn(V, D, generator=gen)
    for k in list(sd):
        if sd[k].dtype != dtype and k != "decoder.version":
            shared = k == "decoder.output_projection.weight" and args.share_decoder_input_output_embed
            sd[k] = sd["decoder.embed_tokens.weight"] if shared else sd[k].to(dtype)
    sd._metadata = OrderedDict([("", {"version": 1}), ("decoder", {"version": 1})])
    return sd


def byte_dict(count):
    """dict.txt lines of a byte-level vocabulary: decimal byte values, counts decreasing."""
    values = list(range(32, 32 + count)) if count <= 224 else list(range(count))
    return ["%d %d" % (v, 100000 - 7 * k) for k, v in enumerate(values)]


# ------------------------------------------------------------------------------------------
# Expected model files (MODEL_FILE.md), written independently of the C++ writer.
# ------------------------------------------------------------------------------------------
def config_json(args, vocab_size):
    d = dims(args, vocab_size)
    config = OrderedDict([
        ("embed_dim", d["D"]), ("z_dim", d["Z"]), ("hidden_dim", d["H"]), ("n_dim", d["N"]),
        ("layers", d["L"]), ("chunk_size", args.decoder_chunk_size), ("vocab_size", d["V"]),
        ("truncation_length", args.truncation_length or 0),
        ("rel_pos_bias", args.rel_pos_bias), ("max_positions", d["P"]),
        ("attention_activation", args.attention_activation_fn), ("activation", "silu"),
        ("norm_type", args.normalization_type),
        ("normalize_before", bool(args.normalize_before)),
        ("final_norm_affine", not args.no_affine_final_norm),
        ("normalize_embedding", bool(args.normalize_embedding)),
        ("scale_embedding", not args.no_scale_embedding),
        ("tied_embeddings", bool(args.share_decoder_input_output_embed)),
        ("ffn_dim", d["F"]),
    ])
    return json.dumps(config, separators=(",", ":"))


def model_file_tensors(sd, tied):
    out = []
    for k, v in sd.items():
        name = k[len("decoder."):]
        if name == "version" or (tied and name == "output_projection.weight"):
            continue
        out.append((name, v))
    return out


def write_model_file(path, tensors, metadata, dtype="F32"):
    """tensors: (name, torch tensor) in order; stored as `dtype` (torch's own rounding)."""
    torch_dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    header = OrderedDict([("__metadata__", OrderedDict(metadata))])
    blobs, offset = [], 0
    for name, t in tensors:
        t = t.detach().to(torch_dtype).contiguous()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = OrderedDict([("dtype", dtype), ("shape", list(t.shape)),
                                    ("data_offsets", [offset, offset + len(data)])])
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_expected(out_dir, name, args, sd, dict_lines, dtype="F32"):
    symbols = SPECIALS + [line.rsplit(" ", 1)[0] for line in dict_lines]
    metadata = [
        ("format", "seqboat"), ("format_version", "1"),
        ("config", config_json(args, len(symbols))),
        ("tokenizer", json.dumps(OrderedDict([("style", "byte"), ("symbols", symbols)]),
                                 separators=(",", ":"))),
        ("source_sha256", "0" * 64), ("converter_version", "make_checkpoints.py"),
    ]
    suffix = "" if dtype == "F32" else "_" + dtype.lower()
    tensors = [(n, t.float()) for n, t in
               model_file_tensors(sd, args.share_decoder_input_output_embed)]
    write_model_file(os.path.join(out_dir, "%s.expected%s.safetensors" % (name, suffix)),
                     tensors, metadata, dtype)


# ------------------------------------------------------------------------------------------
# Zip writing: torch.save's own output, re-packed where a test needs another layout.
# ------------------------------------------------------------------------------------------
def torch_save(obj, path, **kwargs):
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return buf.getvalue()


def read_entries(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def write_zip(path, entries, zip64=False, align=64):
    """A stored-only zip like PyTorch's writer: each entry's data aligned to `align` bytes by
    padding in the local extra field. zip64=True writes every size and offset through zip64
    extra fields and the zip64 end records, as a writer does past 4 GiB."""
    out = bytearray()
    central = bytearray()
    for name, data in entries:
        name_b = name.encode("utf-8")
        crc = zipfile.crc32(data) & 0xFFFFFFFF
        offset = len(out)
        extra = b""
        if zip64:
            extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        pad = (-(offset + 30 + len(name_b) + len(extra) + 4)) % align
        extra += struct.pack("<HH", 0x4646, pad) + b"Z" * pad  # torch uses id 'FF'
        size32 = 0xFFFFFFFF if zip64 else len(data)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, 0, 0, 0, 0x21,
                           crc, size32, size32, len(name_b), len(extra))
        out += name_b + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset) if zip64 else b""
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45 if zip64 else 20,
                               45 if zip64 else 20, 0, 0, 0, 0x21, crc, size32, size32,
                               len(name_b), len(cextra), 0, 0, 0, 0,
                               0xFFFFFFFF if zip64 else offset)
        central += name_b + cextra
    cd_offset = len(out)
    out += central
    count = len(entries)
    if zip64:
        z64_offset = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count,
                           len(central), cd_offset)
        out += struct.pack("<IIQI", 0x07064B50, 0, z64_offset, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                           0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central),
                           cd_offset, 0)
    with open(path, "wb") as f:
        f.write(bytes(out))


def write_pickle_zip(path, pickle_bytes, storages=()):
    """A torch-layout archive around hand-written pickle bytes (for hostile pickles)."""
    entries = [("archive/data.pkl", pickle_bytes)]
    entries += [("archive/data/%s" % k, v) for k, v in storages]
    entries.append(("archive/version", b"3\n"))
    write_zip(path, entries)


# ------------------------------------------------------------------------------------------
# Training leftovers with classes the converter does not know.
# ------------------------------------------------------------------------------------------
class AverageMeter:
    """Stands in for fairseq's meters: a class that exists only in this script's __main__."""

    def __init__(self):
        self.val, self.sum, self.count = 0.5, 12.5, 25
        self.history = [0.1, 0.2]


class Evil:
    """__reduce__ names a callable; torch.load would call it, the converter must not."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def leftovers():
    linear = torch.nn.Linear(3, 2)
    return {
        "optimizer_history": [{
            "criterion_name": "CrossEntropyCriterion",
            "optimizer_name": "Adam",
            "lr_scheduler_state": {"best": 1.5},
            "num_updates": 100,
        }],
        "extra_state": {
            "epoch": 3,
            "val_loss": np.float64(1.23),
            "best_step": np.int64(7),
            "weights": np.arange(6, dtype=np.float32).reshape(2, 3),
            "meters": collections.OrderedDict([("train_loss", AverageMeter())]),
            "seen": {1, 2, 3},
            "frozen": frozenset(["a"]),
            "blob": b"\x00\xff\x10",
            "mutable_blob": bytearray(b"abc"),
            "huge": 2 ** 100,
            "negative": -(2 ** 40),
            "nan": float("nan"),
            "complex": complex(1, 2),
            "by_key": collections.defaultdict(list, {"x": [1, 2]}),
            "size": torch.Size([3, 4]),
            "dtype": torch.float16,
            "device": torch.device("cpu"),
            "module": linear,  # a whole nn.Module: NEWOBJ + BUILD with Parameters inside
            "deep": [[[[["five levels"]]]]],
        },
        "last_optimizer_state": {
            "state": {0: {"step": torch.tensor(100),
                          "exp_avg": torch.zeros(3),
                          "exp_avg_sq": torch.ones(3, dtype=torch.float64),
                          "mask": torch.tensor([True, False]),
                          "bytes": torch.tensor([1, 2], dtype=torch.uint8),
                          "ints": torch.tensor([1, 2], dtype=torch.int32),
                          "half": torch.tensor([1.5], dtype=torch.float16)}},
            "param_groups": [{"lr": 0.001, "betas": (0.9, 0.98), "params": [0]}],
        },
    }


# ------------------------------------------------------------------------------------------
# Hand-written pickles (protocol 2 opcodes) for hostile input.
# ------------------------------------------------------------------------------------------
def hostile_pickles():
    proto = b"\x80\x02"
    out = {}
    # BINGET of a memo slot never written.
    out["memo_out_of_range"] = proto + b"}q\x00X\x04\x00\x00\x00argsh\x63s."
    # A list nested 10,000 deep: EMPTY_LIST x 10000 then APPEND x 9999.
    out["deep_nesting"] = proto + b"]" * 10000 + b"a" * 9999 + b"."
    # BINUNICODE8 (protocol 4) claiming 2^62 bytes.
    out["length_2_62"] = b"\x80\x04" + b"\x8d" + struct.pack("<Q", 1 << 62) + b"abc."
    # A pickle cut short: no STOP.
    out["no_stop"] = proto + b"}q\x00(X\x01\x00\x00\x00aK\x01"
    return out


# ------------------------------------------------------------------------------------------
# The fixtures.
# ------------------------------------------------------------------------------------------
def noncontiguous_state_dict(args, vocab_size, seed):
    """The basic state dict with tensors replaced by strided views that share storages:
    a transposed matrix saved as a Parameter, a column slice, a storage offset, a stride-0
    expansion and a permuted 3-d tensor."""
    sd = state_dict(args, vocab_size, seed)
    d = dims(args, vocab_size)
    D, Z, H, N = d["D"], d["Z"], d["H"], d["N"]
    gen = torch.Generator().manual_seed(seed + 1)
    u = "decoder.layers.0.slag_layer."
    sd[u + "h_proj.weight"] = torch.nn.Parameter(torch.randn(H, D, generator=gen).t())
    wide = torch.randn(Z + 2 * H, 2 * D, generator=gen)
    sd[u + "mx_proj.weight"] = wide[:, ::2]
    base = torch.randn(100, generator=gen)
    sd[u + "hx_proj.bias"] = base[7:7 + 2 + D]
    sd[u + "move.omega"] = torch.randn(1, generator=gen).expand(D)
    sd[u + "move.delta"] = torch.randn(N, D, 1, generator=gen).permute(1, 0, 2)
    sd[u + "q_router.temp"] = base[50:51]
    assert not sd[u + "h_proj.weight"].is_contiguous()
    assert not sd[u + "mx_proj.weight"].is_contiguous()
    return sd


def make_good(out, dict_lines):
    V = len(dict_lines) + 4
    written = []

    def save(name, args, sd, extra=None, expected=True, **kwargs):
        ckpt = {"args": args, "model": sd}
        ckpt.update(leftovers() if extra is None else extra)
        data = torch_save(ckpt, os.path.join(out, name + ".pt"), **kwargs)
        if expected:
            write_expected(out, name, args, sd, dict_lines)
        written.append(name)
        return data

    args = tiny_args()
    basic_sd = state_dict(args, V, seed=1)
    basic = save("basic", args, basic_sd, extra={})
    write_expected(out, "basic", args, basic_sd, dict_lines, "F16")
    write_expected(out, "basic", args, basic_sd, dict_lines, "BF16")
    save("leftovers", args, state_dict(args, V, seed=2))
    save("noncontiguous", args, noncontiguous_state_dict(args, V, seed=3), extra={})
    save("fp16", args, state_dict(args, V, seed=4, dtype=torch.float16), extra={})
    bf16 = state_dict(args, V, seed=5, dtype=torch.bfloat16)
    bf16["decoder.layers.1.slag_layer.move.gamma"] = bf16[
        "decoder.layers.1.slag_layer.move.gamma"].float()  # one fp32 tensor among bf16
    save("bf16", args, bf16, extra={})
    save("protocol4", args, state_dict(args, V, seed=6), pickle_protocol=4)
    save("protocol5", args, state_dict(args, V, seed=7), extra={}, pickle_protocol=5)

    # Every model-math variant the args can express, serialized the usual way.
    variant = tiny_args(share_decoder_input_output_embed=False, decoder_ffn_embed_dim=12,
                        rel_pos_bias="simple", normalization_type="scalenorm",
                        normalize_before=False, attention_activation_fn="relu2",
                        decoder_chunk_size=-1, truncation_length=None)
    save("untied_ffn_simple", variant, state_dict(variant, V, seed=8), extra={})
    rms = tiny_args(normalization_type="rmsnorm", normalize_embedding=True,
                    no_affine_final_norm=True, no_scale_embedding=True,
                    attention_activation_fn="laplace", activation_fn="swish")
    save("rmsnorm_embed_norm", rms, state_dict(rms, V, seed=9), extra={})

    # Args without decoder_ffn_embed_dim: fairseq's default (decoder_hidden_dim) gives FFNs.
    no_ffn_arg = tiny_args(decoder_ffn_embed_dim=6)
    sd = state_dict(no_ffn_arg, V, seed=10)
    delattr(no_ffn_arg, "decoder_ffn_embed_dim")
    save("ffn_by_default", no_ffn_arg, sd, extra={}, expected=False)
    write_expected_args = tiny_args(decoder_ffn_embed_dim=6)
    write_expected(out, "ffn_by_default", write_expected_args, sd, dict_lines)

    # Newer fairseq: args None, the model's args in cfg["model"] (a dict); max positions
    # only in cfg["task"].
    model_cfg = {k: v for k, v in vars(tiny_args()).items()
                 if k not in ("arch", "task", "optimizer", "lr", "seed", "data", "adam_betas",
                              "max_target_positions")}
    model_cfg["_name"] = "slag_lm"
    cfg = {"_name": None,
           "common": {"fp16": False, "log_interval": 100, "seed": 1},
           "model": model_cfg,
           "task": {"_name": "language_modeling", "data": "data-bin/tiny",
                    "tokens_per_sample": 512, "max_target_positions": 32},
           "optimizer": {"_name": "adam", "lr": [0.001], "adam_betas": "(0.9, 0.98)"}}
    sd = state_dict(args, V, seed=11)
    save("cfg_dict", None, sd, extra={"cfg": cfg}, expected=False)
    write_expected(out, "cfg_dict", args, sd, dict_lines)
    # fairseq's legacy-arch path: cfg["model"] is the argparse.Namespace itself.
    sd = state_dict(args, V, seed=12)
    save("cfg_namespace", None, sd, extra={"cfg": {"model": tiny_args(), "task": {}}},
         expected=False)
    write_expected(out, "cfg_namespace", args, sd, dict_lines)
    # An omegaconf DictConfig pickled as such (emulated: omegaconf is not installed).
    sd = state_dict(args, V, seed=13)
    save("cfg_dictconfig", None, sd, extra={"cfg": emulated_dictconfig(
        {"model": emulated_dictconfig(vars(tiny_args())), "task": emulated_dictconfig({})})},
         expected=False)
    write_expected(out, "cfg_dictconfig", args, sd, dict_lines)

    # Layout variants of the basic checkpoint's own bytes.
    entries = read_entries(basic)
    write_zip(os.path.join(out, "zip64.pt"), entries, zip64=True)
    swapped = []
    for name, data in entries:
        if "/data/" in name:
            data = np.frombuffer(data, dtype="<f4").astype(">f4").tobytes()
        swapped.append((name, data))
    swapped.append(("archive/byteorder", b"big"))
    write_zip(os.path.join(out, "big_endian.pt"), swapped)
    for name in ("zip64", "big_endian"):
        write_expected(out, name, args, basic_sd, dict_lines)
    return basic, args, V


def emulated_dictconfig(content):
    """An object pickled like omegaconf's DictConfig: NEWOBJ of
    omegaconf.dictconfig.DictConfig, BUILD with a dict holding `_content`, values wrapped in
    omegaconf.nodes.AnyNode (state `_val`)."""
    dictconfig = sys.modules.setdefault("omegaconf.dictconfig",
                                        types.ModuleType("omegaconf.dictconfig"))
    nodes = sys.modules.setdefault("omegaconf.nodes", types.ModuleType("omegaconf.nodes"))
    sys.modules.setdefault("omegaconf", types.ModuleType("omegaconf"))
    if not hasattr(dictconfig, "DictConfig"):
        DictConfig = type("DictConfig", (), {"__module__": "omegaconf.dictconfig"})
        AnyNode = type("AnyNode", (), {"__module__": "omegaconf.nodes"})
        dictconfig.DictConfig, nodes.AnyNode = DictConfig, AnyNode
    container = dictconfig.DictConfig()
    wrapped = {}
    for key, value in content.items():
        if isinstance(value, dictconfig.DictConfig):
            wrapped[key] = value
        else:
            node = nodes.AnyNode()
            node.__dict__.update({"_val": value, "_metadata": None, "_parent": container})
            wrapped[key] = node
    container.__dict__.update({"_metadata": None, "_parent": None, "_content": wrapped})
    return container


def make_bad(out, basic, args, V):
    sd = state_dict(args, V, seed=1)

    def save(name, ckpt_args, state, extra=None):
        ckpt = {"args": ckpt_args, "model": state}
        ckpt.update(extra or {})
        torch_save(ckpt, os.path.join(out, "bad_%s.pt" % name))

    # Code in the pickle: the converter must name it and never run it.
    save("os_system_args", Evil(os.system, "touch /tmp/seqboat_pwned"), sd)
    torch_save({"args": args, "model": Evil(eval, "__import__('os').system('touch /tmp/seqboat_pwned')")},
               os.path.join(out, "bad_eval_model.pt"))
    # The same call among training leftovers converts (it is inert) and is reported.
    torch_save({"args": args, "model": sd,
                "extra_state": {"hook": Evil(os.system, "touch /tmp/seqboat_pwned")}},
               os.path.join(out, "os_system_leftover.pt"))

    # Features MODEL.md excludes, each named by its arg.
    for name, overrides in [
            ("adaptive_input", {"adaptive_input": True}),
            ("adaptive_softmax", {"adaptive_softmax_cutoff": "4,8"}),
            ("t5", {"rel_pos_bias": "t5"}),
            ("gelu", {"activation_fn": "gelu"}),
            ("input_dim", {"decoder_input_dim": 16}),
            ("arch", {"arch": "transformer_lm"}),
            ("batchnorm", {"normalization_type": "batchnorm"}),
            ("local_pos", {"local_pos": True, "rel_pos_bias": "simple"})]:
        save("reject_" + name, tiny_args(**overrides), sd)
    # Config/shape mismatches.
    save("shape_mismatch", tiny_args(decoder_hidden_dim=7), sd)
    save("layers_huge", tiny_args(decoder_layers=10 ** 9), sd)
    extra = OrderedDict(sd)
    extra["decoder.layers.0.slag_layer.rel_pos_bias.relative_attention_bias"] = torch.zeros(32, 1)
    save("unexpected_tensor", args, extra)
    missing = OrderedDict(sd)
    del missing["decoder.layers.1.slag_layer.h_proj.bias"]
    save("missing_tensor", args, missing)
    untied = OrderedDict(sd)
    untied["decoder.output_projection.weight"] = sd["decoder.embed_tokens.weight"] + 1.0
    save("tied_mismatch", args, untied)
    nonfinite = OrderedDict(sd)
    nonfinite["decoder.layers.0.slag_layer.move.gamma"] = sd[
        "decoder.layers.0.slag_layer.move.gamma"].clone()
    nonfinite["decoder.layers.0.slag_layer.move.gamma"][1, 1] = float("nan")
    save("nonfinite", args, nonfinite)
    large = OrderedDict(sd)
    large["decoder.layers.0.slag_layer.move.omega"] = torch.full((8,), 1e6)
    save("fp16_overflow", args, large)
    save("no_args", None, sd)
    torch_save([1, 2, 3], os.path.join(out, "bad_not_a_dict.pt"))
    # torch.save(..., _use_new_zipfile_serialization=False) starts with these three pickles
    # (magic number, protocol version, sys_info); the rest of its output holds memory
    # addresses as storage keys, so only this deterministic head is kept.
    legacy = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
              + pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
    with open(os.path.join(out, "bad_legacy.pt"), "wb") as f:
        f.write(legacy)

    # Archive damage, from the basic checkpoint's bytes.
    entries = read_entries(basic)
    write_zip(os.path.join(out, "bad_missing_data_pkl.pt"),
              [(n, d) for n, d in entries if not n.endswith("data.pkl")])
    short = [(n, d[: len(d) // 2] if n == "archive/data/1" else d) for n, d in entries]
    write_zip(os.path.join(out, "bad_short_storage.pt"), short)
    no_storage = [(n, d) for n, d in entries if n != "archive/data/1"]
    write_zip(os.path.join(out, "bad_missing_storage.pt"), no_storage)

    for name, data in hostile_pickles().items():
        write_pickle_zip(os.path.join(out, "bad_%s.pt" % name), data)


def write_dicts(out, dict_lines):
    with open(os.path.join(out, "dict.txt"), "w") as f:
        f.write("\n".join(dict_lines) + "\n")
    with open(os.path.join(out, "bad_dict_duplicate.txt"), "w") as f:
        f.write("\n".join(dict_lines[:3] + [dict_lines[1]] + dict_lines[3:]) + "\n")
    with open(os.path.join(out, "bad_dict_malformed.txt"), "w") as f:
        f.write("\n".join(dict_lines[:2] + ["nocount"] + dict_lines[2:]) + "\n")
    with open(os.path.join(out, "bad_dict_short.txt"), "w") as f:
        f.write("\n".join(dict_lines[:3]) + "\n")  # a dict.txt from another data set
    with open(os.path.join(out, "dict_overwrite.txt"), "w") as f:
        # fairseq's flag: a repeated symbol is allowed when the line says so.
        f.write("\n".join(dict_lines[:-1] + [dict_lines[0] + " #fairseq:overwrite"]) + "\n")


def make_enwik8(path):
    """The paper's enwik8 model (39M parameters) with Adam moments, random weights."""
    args = tiny_args(arch="slag_lm_enwik8_base_v2", decoder_layers=14, decoder_embed_dim=616,
                     decoder_input_dim=616, decoder_hidden_dim=1232, decoder_z_dim=128,
                     decoder_n_dim=16, decoder_chunk_size=1024, decoder_ffn_embed_dim=0,
                     truncation_length=2048, max_target_positions=8192,
                     no_affine_final_norm=True)
    lines = byte_dict(256)
    V = len(lines) + 4
    sd = state_dict(args, V, seed=2023)
    params = [t for k, t in sd.items() if k not in ("decoder.version",
                                                    "decoder.output_projection.weight")]
    state = {i: {"step": torch.tensor(1000.0), "exp_avg": torch.zeros_like(t),
                 "exp_avg_sq": torch.zeros_like(t)} for i, t in enumerate(params)}
    ckpt = {"args": args, "model": sd,
            "optimizer_history": [{"optimizer_name": "Adam", "num_updates": 1000}],
            "extra_state": {"epoch": 10, "val_loss": np.float64(1.02)},
            "last_optimizer_state": {"state": state, "param_groups": [
                {"lr": 0.001, "params": list(range(len(params)))}]}}
    torch.save(ckpt, path)
    with open(os.path.join(os.path.dirname(os.path.abspath(path)), "dict.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    count = sum(t.numel() for t in params)
    print("wrote %s: %d parameters, %d bytes" % (path, count, os.path.getsize(path)))


def make_fuzz_corpus(corpus, fixtures):
    """Small seeds for converter/fuzz: whole checkpoints (zip) and bare data.pkl pickles for
    checkpoint_fuzzer, model files for model_file_fuzzer."""
    for sub_dir in ("checkpoint", "model_file"):
        os.makedirs(os.path.join(corpus, sub_dir), exist_ok=True)
    args = tiny_args(decoder_layers=1, decoder_embed_dim=2, decoder_input_dim=2,
                     decoder_z_dim=2, decoder_hidden_dim=2, decoder_n_dim=1)
    lines = byte_dict(1)
    sd = state_dict(args, len(lines) + 4, seed=99)
    sd["decoder.layers.0.slag_layer.h_proj.weight"] = torch.randn(2, 2).t()
    data = torch_save({"args": args, "model": sd, "extra_state": {"v": np.float32(1)}},
                      os.path.join(corpus, "checkpoint", "tiny.pt"))
    for name, payload in read_entries(data):
        if name.endswith("data.pkl"):
            with open(os.path.join(corpus, "checkpoint", "tiny_data.pkl"), "wb") as f:
                f.write(payload)
    for name in ("cfg_dict", "protocol4"):
        with zipfile.ZipFile(os.path.join(fixtures, name + ".pt")) as z:
            with open(os.path.join(corpus, "checkpoint", name + "_data.pkl"), "wb") as f:
                f.write(z.read("archive/data.pkl"))
    write_expected(os.path.join(corpus, "model_file"), "tiny", args, sd, lines)
    write_expected(os.path.join(corpus, "model_file"), "tiny", args, sd, lines, "BF16")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="fixture folder (tests/fixtures/converter)")
    parser.add_argument("--enwik8", help="write only the 39M-parameter checkpoint here")
    parser.add_argument("--fuzz_corpus", help="also write fuzzer seeds here (converter/fuzz/corpus)")
    opts = parser.parse_args()
    torch.manual_seed(0)
    if opts.enwik8:
        make_enwik8(opts.enwik8)
        return
    if not opts.out:
        parser.error("--out or --enwik8 is required")
    os.makedirs(opts.out, exist_ok=True)
    dict_lines = byte_dict(6)
    write_dicts(opts.out, dict_lines)
    basic, args, V = make_good(opts.out, dict_lines)
    make_bad(opts.out, basic, args, V)
    if opts.fuzz_corpus:
        make_fuzz_corpus(opts.fuzz_corpus, opts.out)
    print("wrote %d files to %s" % (len(os.listdir(opts.out)), opts.out))


if __name__ == "__main__":
    main()
