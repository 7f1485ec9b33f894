"""Independent PyTorch reference of a SeqBoat language model (docs: /work/shared/docs/MODEL.md).

Written from MODEL.md alone. Parameter names are those of fairseq's state dict
(`decoder.embed_tokens.weight`, `decoder.layers.{i}.slag_layer.move.delta`, ...), so a
state dict of this module is a fairseq-style `model` entry and the other way round.

The forward pass takes a whole token sequence and computes in float64 (weights are stored
in float32, as in the model file, and cast up) in a PARALLEL formulation that shares
nothing with the recurrent decoder of the C++ runtime:

* MD-EMA: an explicit causal convolution. Per channel d the kernel is
  K[d, j] = sum_n gamma[d,n] * sqrt(1/N) * p[d,n] * beta[d,n] * q[d,n]^j,
  j = 0 .. len-1 for the `exact` horizon and j = 0 .. T-1 (T = truncation_length) for the
  `trained` horizon; it is applied as a dense lower-triangular Toeplitz matrix product,
  then m = conv + omega * u.
* Router for every token: (p0, p1) = softmax([g0 + b, g1] / exp(temp)) with the layer's
  activation bias b (0 unless given; positive b means fewer activations); activated iff
  p1 > p0 (ties are not activated); confidence = max(p0, p1), from these probabilities.
* GAU for the activated tokens only, as one masked attention over the compressed
  sequence of activated tokens: activated token i (i-th activated token of the layer)
  attends to compressed indices j with i - w <= j <= i (itself and the at most w most
  recent earlier activated tokens, i.e. the w-slot FIFO). Rotary angles and the simple
  relative bias use the ORIGINAL token positions (0-based). Non-activated tokens get
  gau = 0.

Options: softmax / relu2 / laplace attention (relu2 and laplace divide q.k by w),
rotary / simple relative bias, layernorm / scalenorm / rmsnorm (eps 1e-5), pre/post norm,
final norm with or without affine parameters (pre-norm only), normalize_embedding,
scale_embedding, tied/untied output projection, the normalised FFN (silu).
`chunk_size <= 0` (SeqBoat-full) attends to every earlier activated token unless a
`fifo_capacity` is given.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, asdict
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

NORM_EPS = 1e-5
LAPLACE_MU = 0.707107
LAPLACE_STD = 0.282095
ROTARY_BASE = 10000.0


@dataclass
class SeqBoatConfig:
    """The model file's `config` (docs/MODEL_FILE.md), field for field, in its key order."""

    embed_dim: int
    z_dim: int
    hidden_dim: int
    n_dim: int
    layers: int
    chunk_size: int
    vocab_size: int
    truncation_length: int
    rel_pos_bias: str  # rotary | simple
    max_positions: int
    attention_activation: str  # softmax | relu2 | laplace
    activation: str  # silu
    norm_type: str  # layernorm | scalenorm | rmsnorm
    normalize_before: bool
    final_norm_affine: bool
    normalize_embedding: bool
    scale_embedding: bool
    tied_embeddings: bool
    ffn_dim: int

    def to_dict(self) -> "OrderedDict[str, object]":
        return OrderedDict(asdict(self))

    @staticmethod
    def from_fairseq_args(args, vocab_size: int) -> "SeqBoatConfig":
        """Maps fairseq argument names onto the config (rejecting what MODEL.md excludes)."""
        if getattr(args, "adaptive_input", False):
            raise ValueError("adaptive_input is not supported")
        if getattr(args, "adaptive_softmax_cutoff", None):
            raise ValueError("adaptive_softmax_cutoff is not supported")
        din = getattr(args, "decoder_input_dim", args.decoder_embed_dim)
        if din != args.decoder_embed_dim:
            raise ValueError("decoder_input_dim != decoder_embed_dim is not supported")
        if args.rel_pos_bias not in ("rotary", "simple"):
            raise ValueError("rel_pos_bias %r is not supported" % args.rel_pos_bias)
        if args.activation_fn != "silu":
            raise ValueError("activation_fn %r is not supported" % args.activation_fn)
        return SeqBoatConfig(
            embed_dim=args.decoder_embed_dim,
            z_dim=args.decoder_z_dim,
            hidden_dim=args.decoder_hidden_dim,
            n_dim=args.decoder_n_dim,
            layers=args.decoder_layers,
            chunk_size=args.decoder_chunk_size,
            vocab_size=vocab_size,
            truncation_length=args.truncation_length or 0,
            rel_pos_bias=args.rel_pos_bias,
            max_positions=args.max_target_positions,
            attention_activation=args.attention_activation_fn,
            activation=args.activation_fn,
            norm_type=args.normalization_type,
            normalize_before=bool(args.normalize_before),
            final_norm_affine=not args.no_affine_final_norm,
            normalize_embedding=bool(args.normalize_embedding),
            scale_embedding=not args.no_scale_embedding,
            tied_embeddings=bool(args.share_decoder_input_output_embed),
            ffn_dim=args.decoder_ffn_embed_dim,
        )


def silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


# --------------------------------------------------------------------------------------
# Norms. `SequenceNorm.norm` holds the parameters, hence the names `<...>.norm.norm.weight`.
# --------------------------------------------------------------------------------------
class _NormImpl(nn.Module):
    def __init__(self, kind: str, dim: int, affine: bool):
        super().__init__()
        if kind not in ("layernorm", "scalenorm", "rmsnorm"):
            raise ValueError("unknown norm %r" % kind)
        self.kind = kind
        self.affine = affine
        if affine:
            if kind == "layernorm":
                self.weight = nn.Parameter(torch.ones(dim))
                self.bias = nn.Parameter(torch.zeros(dim))
            elif kind == "scalenorm":
                self.scalar = nn.Parameter(torch.ones(1))
            else:
                self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = x.dtype
        if self.kind == "layernorm":
            mean = x.mean(dim=-1, keepdim=True)
            var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased, as torch's layer_norm
            y = (x - mean) / torch.sqrt(var + NORM_EPS)
            if self.affine:
                y = y * self.weight.to(dt) + self.bias.to(dt)
            return y
        y = x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + NORM_EPS)
        if self.affine:
            y = y * (self.scalar.to(dt) if self.kind == "scalenorm" else self.weight.to(dt))
        return y


class SequenceNorm(nn.Module):
    def __init__(self, kind: str, dim: int, affine: bool = True):
        super().__init__()
        self.norm = _NormImpl(kind, dim, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def _linear(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    w = lin.weight.to(x.dtype)
    b = None if lin.bias is None else lin.bias.to(x.dtype)
    return F.linear(x, w, b)


# --------------------------------------------------------------------------------------
# MD-EMA as an explicit causal convolution.
# --------------------------------------------------------------------------------------
class MovingAverage(nn.Module):
    def __init__(self, dim: int, ndim: int):
        super().__init__()
        self.ndim = ndim
        self.delta = nn.Parameter(torch.zeros(dim, ndim, 1))
        self.alpha = nn.Parameter(torch.zeros(dim, ndim, 1))
        self.beta = nn.Parameter(torch.zeros(dim, ndim, 1))
        self.gamma = nn.Parameter(torch.zeros(dim, ndim))
        self.omega = nn.Parameter(torch.zeros(dim))

    def coefficients(self, dtype):
        p = torch.sigmoid(self.delta.to(dtype))[..., 0]  # D x N
        a = torch.sigmoid(self.alpha.to(dtype))[..., 0]
        q = 1.0 - p * a
        return p, q

    def kernel(self, taps: int, dtype) -> torch.Tensor:
        """K[d, j] = sum_n gamma * sqrt(1/N) * p * beta * q^j for j < taps: D x taps."""
        p, q = self.coefficients(dtype)
        beta = self.beta.to(dtype)[..., 0]
        gamma = self.gamma.to(dtype)
        j = torch.arange(taps, dtype=dtype)
        powers = q.unsqueeze(-1) ** j  # D x N x taps
        coef = p * beta * gamma * math.sqrt(1.0 / self.ndim)  # D x N
        return (coef.unsqueeze(-1) * powers).sum(dim=1)

    def forward(self, u: torch.Tensor, taps: int) -> torch.Tensor:
        """u: T x D. Causal convolution with a kernel of `taps` taps (taps >= 1)."""
        length, dim = u.shape
        taps = max(1, min(taps, length))
        k = self.kernel(taps, u.dtype)  # D x taps
        lag = torch.arange(length).unsqueeze(1) - torch.arange(length).unsqueeze(0)  # t - s
        valid = (lag >= 0) & (lag < taps)
        toeplitz = k[:, lag.clamp(0, taps - 1)] * valid.to(u.dtype)  # D x T x T
        conv = torch.einsum("dts,sd->td", toeplitz, u)
        return conv + self.omega.to(u.dtype) * u


class LatentRouter(nn.Module):
    def __init__(self):
        super().__init__()
        self.temp = nn.Parameter(torch.zeros(1))  # log of the temperature


class SimpleRelativePositionalBias(nn.Module):
    def __init__(self, max_positions: int):
        super().__init__()
        self.max_positions = max_positions
        self.rel_pos_bias = nn.Parameter(torch.zeros(2 * max_positions - 1))

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor, dtype) -> torch.Tensor:
        P = self.max_positions
        index = (P - 1 + k_pos.unsqueeze(0) - q_pos.unsqueeze(1)).clamp(0, 2 * P - 2)
        return self.rel_pos_bias.to(dtype)[index]


def rotate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Interleaved rotary: pair (2i, 2i+1) times exp(j * t * theta_i), theta_i = 10000^(-2i/Z).
    Angles are formed in float64 whatever x's dtype."""
    zdim = x.shape[-1]
    i = torch.arange(zdim // 2, dtype=torch.float64)
    theta = ROTARY_BASE ** (-2.0 * i / zdim)
    angle = positions.to(torch.float64).unsqueeze(-1) * theta  # n x Z/2
    cos = torch.cos(angle).to(x.dtype)
    sin = torch.sin(angle).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


class SeqBoatUnit(nn.Module):
    """`layers.{i}.slag_layer`."""

    def __init__(self, cfg: SeqBoatConfig):
        super().__init__()
        self.cfg = cfg
        D, Z, H = cfg.embed_dim, cfg.z_dim, cfg.hidden_dim
        self.norm = SequenceNorm(cfg.norm_type, D)
        self.move = MovingAverage(D, cfg.n_dim)
        self.gamma = nn.Parameter(torch.zeros(2, Z))
        self.beta = nn.Parameter(torch.zeros(2, Z))
        if cfg.rel_pos_bias == "simple":
            self.rel_pos_bias = SimpleRelativePositionalBias(cfg.max_positions)
        elif cfg.rel_pos_bias != "rotary":
            raise ValueError("rel_pos_bias %r not supported" % cfg.rel_pos_bias)
        self.q_router = LatentRouter()
        self.mx_proj = nn.Linear(D, Z + 2 * H)
        self.hx_proj = nn.Linear(D, 2 + D)
        self.h_proj = nn.Linear(H, D)

    def attention_weights(self, scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        kind = self.cfg.attention_activation
        if kind == "softmax":
            s = scores.masked_fill(~allowed, float("-inf"))
            return torch.softmax(s, dim=-1)
        if kind == "relu2":
            wgt = torch.relu(scores) ** 2
        elif kind == "laplace":
            wgt = 0.5 * (1.0 + torch.erf((scores - LAPLACE_MU) / (LAPLACE_STD * math.sqrt(2.0))))
        else:
            raise ValueError("attention_activation %r not supported" % kind)
        return wgt * allowed.to(scores.dtype)

    def forward(self, x: torch.Tensor, horizon: str, fifo_capacity: Optional[int] = None,
                act_bias: float = 0.0):
        cfg = self.cfg
        length = x.shape[0]
        dt = x.dtype
        u = self.norm(x) if cfg.normalize_before else x

        if horizon == "exact" or cfg.truncation_length <= 0:
            taps = length
        elif horizon == "trained":
            taps = cfg.truncation_length
        else:
            raise ValueError("horizon must be exact or trained")
        m = self.move(u, taps)
        mx = silu(m)

        o = _linear(mx, self.hx_proj)
        g = o[:, :2]
        hx = o[:, 2:]
        tau = torch.exp(self.q_router.temp.to(dt))
        biased = torch.stack([g[:, 0] + act_bias, g[:, 1]], dim=1)  # bias on "not activated"
        probs = torch.softmax(biased / tau, dim=-1)
        p0, p1 = probs[:, 0], probs[:, 1]
        active = p1 > p0
        conf = torch.maximum(p0, p1)
        margin = (p1 - p0).abs()

        gau = torch.zeros_like(x)
        idx = torch.nonzero(active, as_tuple=False)[:, 0]
        n_act = idx.numel()
        if n_act > 0:
            Z, H = cfg.z_dim, cfg.hidden_dim
            base = silu(_linear(mx[idx], self.mx_proj))
            z, r, v = base[:, :Z], base[:, Z:Z + H], base[:, Z + H:]
            gamma, beta = self.gamma.to(dt), self.beta.to(dt)
            qv = z * gamma[0] + beta[0]
            kv = z * gamma[1] + beta[1]
            if cfg.rel_pos_bias == "rotary":
                qv = rotate(qv, idx)
                kv = rotate(kv, idx)
            scores = qv @ kv.t()
            if cfg.attention_activation == "softmax":
                scores = scores / math.sqrt(Z)
            else:
                if cfg.chunk_size <= 0:
                    raise ValueError("relu2/laplace need chunk_size > 0 (the divisor w)")
                scores = scores / cfg.chunk_size
            if cfg.rel_pos_bias == "simple":
                scores = scores + self.rel_pos_bias(idx, idx, dt)
            ci = torch.arange(n_act)
            back = ci.unsqueeze(1) - ci.unsqueeze(0)  # i - j over compressed indices
            window = cfg.chunk_size if cfg.chunk_size > 0 else fifo_capacity
            allowed = back >= 0
            if window is not None:
                allowed = allowed & (back <= window)
            weights = self.attention_weights(scores, allowed)
            h = weights @ v
            y = _linear(h * r, self.h_proj)
            gau[idx] = conf[idx].unsqueeze(1) * y

        out = silu(hx + gau + x)
        if not cfg.normalize_before:
            out = self.norm(out)
        return out, active, conf, g, margin


class NormalizedFFN(nn.Module):
    """`layers.{i}.nffn`."""

    def __init__(self, cfg: SeqBoatConfig):
        super().__init__()
        self.prenorm = cfg.normalize_before
        self.norm = SequenceNorm(cfg.norm_type, cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x) if self.prenorm else x
        y = x + _linear(silu(_linear(h, self.fc1)), self.fc2)
        if not self.prenorm:
            y = self.norm(y)
        return y


class SeqBoatLayer(nn.Module):
    def __init__(self, cfg: SeqBoatConfig):
        super().__init__()
        self.slag_layer = SeqBoatUnit(cfg)
        if cfg.ffn_dim > 0:
            self.nffn = NormalizedFFN(cfg)
        else:
            self.nffn = None


class SeqBoatDecoder(nn.Module):
    def __init__(self, cfg: SeqBoatConfig, padding_idx: int = 1):
        super().__init__()
        self.cfg = cfg
        self.padding_idx = padding_idx
        D, V = cfg.embed_dim, cfg.vocab_size
        self.embed_tokens = nn.Embedding(V, D, padding_idx=padding_idx)
        self.embed_norm = SequenceNorm(cfg.norm_type, D) if cfg.normalize_embedding else None
        self.layers = nn.ModuleList([SeqBoatLayer(cfg) for _ in range(cfg.layers)])
        if cfg.normalize_before:
            self.final_norm = SequenceNorm(cfg.norm_type, D, affine=cfg.final_norm_affine)
        else:
            self.final_norm = None
        self.output_projection = nn.Linear(D, V, bias=False)
        if cfg.tied_embeddings:
            self.output_projection.weight = self.embed_tokens.weight  # shared, as fairseq
        self.register_buffer("version", torch.Tensor([3]))


class SeqBoatLM(nn.Module):
    def __init__(self, cfg: SeqBoatConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder = SeqBoatDecoder(cfg)

    def fairseq_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        """The `model` entry of a fairseq checkpoint: detached float32 tensors; when tied,
        `decoder.output_projection.weight` is the very same tensor object as
        `decoder.embed_tokens.weight`."""
        sd = OrderedDict()
        for k, v in self.state_dict().items():
            sd[k] = v.detach().clone()
        if self.cfg.tied_embeddings:
            sd["decoder.output_projection.weight"] = sd["decoder.embed_tokens.weight"]
        return sd

    @torch.no_grad()
    def forward(self, tokens, horizon: str = "exact", dtype=torch.float64,
                fifo_capacity: Optional[int] = None,
                act_bias: Optional[Sequence[float]] = None) -> Dict[str, torch.Tensor]:
        """tokens: 1-D integer sequence (position 0 first). act_bias: None (all 0) or one
        router activation bias per layer, added to router logit 0 before the temperature.
        Returns logits [T, V], activations [L, T] (bool), confidences [L, T], router_logits
        [L, T, 2] (without the activation bias) and margins [L, T] (|p1 - p0|, with it), all
        in `dtype` (float64 by default)."""
        cfg = self.cfg
        dec = self.decoder
        biases = [0.0] * cfg.layers if act_bias is None else [float(b) for b in act_bias]
        assert len(biases) == cfg.layers, "act_bias needs one value per layer"
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        assert tokens.dim() == 1 and tokens.numel() > 0
        x = dec.embed_tokens.weight.to(dtype)[tokens]
        if cfg.scale_embedding:
            x = x * math.sqrt(cfg.embed_dim)
        if dec.embed_norm is not None:
            x = dec.embed_norm(x)
        acts, confs, glog, margins = [], [], [], []
        for layer, bias in zip(dec.layers, biases):
            x, active, conf, g, margin = layer.slag_layer(x, horizon, fifo_capacity, bias)
            if layer.nffn is not None:
                x = layer.nffn(x)
            acts.append(active)
            confs.append(conf)
            glog.append(g)
            margins.append(margin)
        if dec.final_norm is not None:
            x = dec.final_norm(x)
        weight = dec.embed_tokens.weight if cfg.tied_embeddings else dec.output_projection.weight
        logits = x @ weight.to(dtype).t()
        return {
            "logits": logits,
            "activations": torch.stack(acts),
            "confidences": torch.stack(confs),
            "router_logits": torch.stack(glog),
            "margins": torch.stack(margins),  # |p1 - p0|
        }
