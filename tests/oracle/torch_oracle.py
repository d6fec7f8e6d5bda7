#!/usr/bin/python3
"""Torch oracle for Birkhoff's model: the dense baseline and the hc / mhc n-stream models, with
MHA or MLA attention, a dense or DeepSeekMoE FFN, and optional multi-token prediction.

Reads the safetensors file written by `oracle_dump_step` (tests/oracle/dump_step.cpp): the fp32
weights, the tokens and targets of one step of M micro-batches, and the loss and gradients the
C++ model computed. Rebuilds the same model here, independently, as ordinary PyTorch
(nn.functional + autograd) in float64, and checks the loss and every gradient.

Run with Debian's interpreter, which sees `python3-torch` (CPU) and `python3-numpy`:
    /usr/bin/python3 tests/oracle/torch_oracle.py step.safetensors

The model (see docs/architecture.md and src/model/):
    x = embed[tokens]
    per layer:  x = x + Wo attn(rope(Wq n), rope(Wk n), Wv n),      n = rmsnorm(x, attn.norm)
                x = x + W2 (silu(W1 n) * W3 n),                      n = rmsnorm(x, ffn.norm)
    logits = head(rmsnorm(x, final_norm)),  per-token cross-entropy
    rmsnorm(x, w) = x / sqrt(mean(x^2) + eps) * w
    causal softmax attention, scale 1/sqrt(D), heads of width D = C / H
    RoPE, half-split ("rotate_half"): the pair (i, i + D/2) at position t rotates by
    t * theta^(-2i/D), positions counted from 0 in every sequence.
With residual mode hc or mhc (metadata `residual_mode`, `streams` n), the state is n streams
X [n, C] per token (the op contract at the bottom of kernels/op_list.inc):
    X = [x, ..., x] (n copies of the embedding)
    per sublayer F (attn, ffn, alternating; F includes its pre-norm):
        X' = H_res X + H_post^T F(H_pre X),  i.e. X'_i = sum_j H_res[i,j] X_j + h_post[i] F(sum_j h_pre[j] X_j)
    x = mean_i X_i, then the final norm and the head as above.
  mhc, per token: v = vec(X) (stream-major, n*C), rinv = 1/sqrt(mean(v^2) + eps), z = phi v,
    logits = alpha[g] * rinv * z + bias (groups: pre [0,n), post [n,2n), res [2n, n*n+2n), the
    res block row-major: H_res[i,j] from 2n + i*n + j); h_pre = sigmoid, h_post = 2 sigmoid,
    H_res = Sinkhorn(res logits): P = exp(L - max L), then sinkhorn_iters times: divide every
    column by its sum, then every row by its sum (autograd through the unrolled iterations).
  hc, per token and stream i: u_i = tanh(w (X_i / sqrt(mean(X_i^2) + eps))), w [n+2, C];
    h_pre[i] = scale[0] u_i[0] + static_pre[i], h_post[i] = scale[1] u_i[1] + static_post[i],
    H_res[j,i] = scale[2] u_i[2+j] + static_res[j,i] (stream i's dynamic term fills column i).
Loss reduction (the trainer's, see dump_step.cpp): targets < 0 are ignored, and
    loss = sum of CE over non-ignored tokens / (all tokens of the step, M * B * T).
With metadata attention = mla, the attention sublayer is multi-head latent attention (mla() below
has its equations, from DeepSeek-V2/V3 and src/model/mla.h): low-rank queries (q_lora_rank > 0)
and keys/values through a normed latent, heads of [nope | rope] query/key dims and v_head value
dims, one rotary key per token shared by all heads, scale 1/sqrt(nope + rope).
With ffn = moe, blocks from moe_first_dense_layers on have a DeepSeekMoE FFN (moe_ffn() below):
sigmoid router scores, top-k by score + routing bias (model state, dumped as `state.<layer>.
router.bias`; group-limited when n_groups > 1), gates from the unbiased scores normalised and
scaled, routed SwiGLU experts plus one shared SwiGLU of width shared_experts * moe_inter_dim. The
top-k choice is not differentiable: this oracle makes it itself, in float64 from the fp32 weights,
and must choose the same experts as the C++ model for every token (`route.<layer>.idx`, checked
as sets; a mismatch is a failure naming the layer, the count and whether the margin makes it a
near-tie; the dump tool refuses dumps with margin < 1e-6, so a mismatch is a real difference).
The sequence-wise balance loss (alpha = moe_balance_loss_weight > 0) is part of the objective.
With mtp_depth D > 0, D multi-token-prediction modules follow the main head (step_loss()), each a
block of the model's kind (MoE when the model has MoE blocks) sharing the embedding and the head.
The objective whose gradient the C++ backward computes is then
    J = loss + mtp_weight * mtp_loss + balance_loss
and each part is compared on its own (`loss`, `mtp_loss`, `balance_loss` in the dump).

Tolerances. The C++ model computes in fp32 (unit roundoff u = 2^-24 = 6e-8); the oracle computes
in float64 from the same fp32 weights, so its result is exact to ~1e-16 and the difference is
the C++ rounding error alone. Every value is a chain of dot products and reductions of length
K <= max(C, F, V, T, tokens) (a few hundred here), each with a relative error of about
sqrt(K) * u ~ 1e-6 (K * u ~ 1e-5 in the worst case), compounded over the 2L + 2 sublayers of the
forward and the backward of a network that is well conditioned at initialisation (pre-norm,
residual). Measured: ~1e-8 for the loss and <= 1.2e-6 for every gradient (the ctest shapes, and
V=2048 C=128 L=4 T=128). So:
    loss:      |loss_bk - loss_torch| / |loss_torch|          <= 1e-5
    gradients: ||g_bk - g_torch||_F / ||g_torch||_F per tensor <= 1e-4
about 100x above the fp32 noise, and 100x below what a real error gives (a sign or convention
slip, a missing term, a wrong scale, an off-by-one in a mask or a position: 1e-2 to 1; see
--mutate, which injects such slips into the oracle to show each one is caught). The bound
assumes init-scale weights: a deliberately ill-conditioned model (--init-std 0.5, peaked
softmaxes, loss far above ln V) amplifies fp32 rounding to ~6e-5, near the tolerance.

The same tolerances hold for hc and mhc, with one change of denominator: a connector's
coefficient parameters (mhc alpha, bias; hc scale, static_*) are measured against the norm of all
of that connector's coefficient gradients together (conn_group says why: some of them vanish by
structure, e.g. hc's static_pre in the first sublayer is eps-sized, and no fp32 computation gives
such a value any relative accuracy). Measured on the ctest dumps: loss <= 5e-8, gradients
<= 4.1e-6 (hc) and <= 2.7e-6 (mhc), each within ~3x of the float64 gradient's own sensitivity to
rounding the weights to fp32 (perturbing every weight by a relative 6e-8 moves it 0.4e-6..3e-6):
the C++ side is at the fp32 noise floor. The Sinkhorn path needs nothing more (3 and 20 iterations;
its gradients are among the most accurate). hc can be ill-conditioned where H_pre X nearly cancels;
run() prints that gain, and the ctest dumps keep it small.

The same holds with MLA, MoE and MTP, with no change: measured on the ctest dumps, loss parts
<= 3.1e-8 and gradients <= 1e-6 (MLA / MoE on the baseline, routed experts with a handful of
tokens included), <= 3.1e-6 with hc / mhc, <= 4e-6 for the MTP modules' mhc connectors, and the
same on a larger model (V=512 C=96 L=3 T=64, 16 experts top-4 in 4 groups, MTP 1: <= 7.4e-7).
The routing is the one place where fp32 and float64 could differ discretely (see above); a
different choice would not be a rounding error but a different function, so it is checked
exactly rather than absorbed by a tolerance.

Exit status: 0 when every check passes; 1 when a tensor is off, missing or unexpected, or the
file is malformed; 2 when torch or numpy cannot be imported. With --expect-fail the status of
the comparison is inverted (for the self-test that a mutated oracle is rejected).
"""

import argparse
import json
import math
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a FAIL, not a skip: the setup script installs these
    print(f"torch_oracle: cannot import {e.name} ({e}) with {sys.executable}.\n"
          "torch_oracle: install Debian's packages: apt-get install python3-torch python3-numpy "
          "(tools/setup.sh does), and run the oracle with /usr/bin/python3.", file=sys.stderr)
    sys.exit(2)

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
MUTATE = None  # --mutate, for the self-test


class OracleError(Exception):
    pass


# ---- safetensors: tests/bk_safetensors.py, numpy only, written from the format spec ------------
import os  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bk_safetensors import read_safetensors  # noqa: E402  (its errors are ValueErrors)


# ---- the model, in torch -----------------------------------------------------------------------

def expected_params(cfg):
    """Name -> shape of every parameter, from the architecture (not from the file)."""
    V, C, Fd = cfg["vocab_size"], cfg["dim"], cfg["ffn_dim"]
    H, n = cfg["n_heads"], cfg["streams"]
    shapes = {"embed.weight": (V, C)}

    def block(p, moe):
        a = f"{p}.attn"
        shapes[f"{a}.norm.weight"] = (C,)
        if cfg["attention"] == "mla":
            qr, kvr = cfg["mla_q_lora_rank"], cfg["mla_kv_lora_rank"]
            nope, rope_d, vd = cfg["mla_qk_nope_dim"], cfg["mla_qk_rope_dim"], cfg["mla_v_head_dim"]
            if qr > 0:
                shapes.update({f"{a}.w_dq.weight": (qr, C), f"{a}.q_norm.weight": (qr,),
                               f"{a}.w_uq.weight": (H * (nope + rope_d), qr)})
            else:
                shapes[f"{a}.wq.weight"] = (H * (nope + rope_d), C)
            shapes.update({f"{a}.w_dkv.weight": (kvr + rope_d, C), f"{a}.kv_norm.weight": (kvr,),
                           f"{a}.w_ukv.weight": (H * (nope + vd), kvr), f"{a}.wo.weight": (C, H * vd)})
        else:
            for w in ("wq", "wk", "wv", "wo"):
                shapes[f"{a}.{w}.weight"] = (C, C)
        f = f"{p}.ffn"
        shapes[f"{f}.norm.weight"] = (C,)
        if moe:
            E, Fe = cfg["moe_routed_experts"], cfg["moe_inter_dim"]
            shapes[f"{f}.router.weight"] = (E, C)
            experts = [f"{f}.experts.{e}" for e in range(E)]
            if cfg["moe_shared_experts"] > 0:
                S = cfg["moe_shared_experts"] * Fe
                shapes.update({f"{f}.shared.w1.weight": (S, C), f"{f}.shared.w3.weight": (S, C),
                               f"{f}.shared.w2.weight": (C, S)})
            for x in experts:
                shapes.update({f"{x}.w1.weight": (Fe, C), f"{x}.w3.weight": (Fe, C),
                               f"{x}.w2.weight": (C, Fe)})
        else:
            shapes.update({f"{f}.w1.weight": (Fd, C), f"{f}.w3.weight": (Fd, C),
                           f"{f}.w2.weight": (C, Fd)})
        for conn in ("attn_conn", "ffn_conn"):
            c = f"{p}.{conn}"
            if cfg["residual_mode"] == "mhc":
                m = n * n + 2 * n
                shapes.update({f"{c}.phi": (m, n * C), f"{c}.alpha": (3,), f"{c}.bias": (m,)})
            elif cfg["residual_mode"] == "hc":
                shapes.update({f"{c}.w": (n + 2, C), f"{c}.scale": (3,), f"{c}.static_pre": (n,),
                               f"{c}.static_post": (n,), f"{c}.static_res": (n, n)})

    for l, moe in enumerate(cfg["block_moe"]):
        block(f"layers.{l}", moe)
    shapes["final_norm.weight"] = (C,)
    shapes["head.weight"] = (V, C)
    for j in range(cfg["mtp_depth"]):
        shapes.update({f"mtp.{j}.norm_h.weight": (C,), f"mtp.{j}.norm_e.weight": (C,),
                       f"mtp.{j}.proj.weight": (C, 2 * C)})
        block(f"mtp.{j}", cfg["mtp_moe"])
    return shapes


def moe_prefixes(cfg):
    """The MoE sublayers, in the model's order (the main blocks, then the MTP modules)."""
    out = [f"layers.{l}.ffn" for l, moe in enumerate(cfg["block_moe"]) if moe]
    return out + ([f"mtp.{j}.ffn" for j in range(cfg["mtp_depth"])] if cfg["mtp_moe"] else [])


def rms_norm(x, w, eps):
    if MUTATE == "norm_unweighted":
        w = 1 + 0 * w  # the forward ignores w (its gradient is then 0)
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x, theta, mutate):
    """x: [B, H, T, D]; the half-split rotary embedding, positions 0..T-1."""
    T, D = x.shape[-2], x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)      # theta^(-2i/D)
    if mutate == "rope_freq":  # theta^(-i/D): a common slip in the exponent
        inv_freq = theta ** (-torch.arange(0, D // 2, dtype=torch.float64) / D)
    pos = torch.arange(T, dtype=torch.float64)  # (a shift of all positions is invisible: RoPE is relative)
    angle = torch.outer(pos, inv_freq)                                            # [T, D/2]
    if mutate == "rope_sign":
        angle = -angle
    if mutate == "rope_interleaved":  # the GPT-J convention: pairs (2i, 2i+1)
        xr = x.unflatten(-1, (D // 2, 2))
        c, s = angle.cos(), angle.sin()
        return torch.stack((xr[..., 0] * c - xr[..., 1] * s, xr[..., 1] * c + xr[..., 0] * s),
                           dim=-1).flatten(-2)
    cos = torch.cat((angle.cos(), angle.cos()), dim=-1)
    sin = torch.cat((angle.sin(), angle.sin()), dim=-1)
    return x * cos + rotate_half(x) * sin


def causal_attention(q, k, v, scale, mutate):
    """q, k [B, H, T, Dk], v [B, H, T, Dv] -> [B, H, T, Dv]."""
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) * scale
    if mutate != "no_causal_mask":
        future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def attention(x, p, pre, cfg, mutate):
    Bn, T, C = x.shape
    H = cfg["n_heads"]
    D = C // H
    n = rms_norm(x, p[f"{pre}.norm.weight"], cfg["norm_eps"])
    heads = lambda t: t.view(Bn, T, H, D).transpose(1, 2)                        # [B, H, T, D]
    q = rope(heads(F.linear(n, p[f"{pre}.wq.weight"])), cfg["rope_theta"], mutate)
    k = rope(heads(F.linear(n, p[f"{pre}.wk.weight"])), cfg["rope_theta"], mutate)
    v = heads(F.linear(n, p[f"{pre}.wv.weight"]))
    out = causal_attention(q, k, v, 1 / math.sqrt(D), mutate)                    # [B, H, T, D]
    return F.linear(out.transpose(1, 2).reshape(Bn, T, C), p[f"{pre}.wo.weight"])


def mla(x, p, pre, cfg, mutate):
    """Multi-head latent attention (src/model/mla.h), written from the DeepSeek-V2/V3 equations:
        n = rmsnorm(x);  q = W_q n  or  W_uq rmsnorm(W_dq n);  per head q_h = [q_nope_h, q_pe_h]
        [c, k_pe] = W_dkv n  (c: the kv latent, k_pe: the last `rope` columns, ONE rotary key per
        token shared by all heads);  per head [k_nope_h, v_h] from W_ukv rmsnorm(c)
        K_h = [k_nope_h, rope(k_pe)],  Q_h = [q_nope_h, rope(q_pe_h)],  scale 1/sqrt(nope + rope)."""
    Bn, T, C = x.shape
    H, eps, theta = cfg["n_heads"], cfg["norm_eps"], cfg["rope_theta"]
    nope, rd, vd = cfg["mla_qk_nope_dim"], cfg["mla_qk_rope_dim"], cfg["mla_v_head_dim"]
    kvr = cfg["mla_kv_lora_rank"]
    n = rms_norm(x, p[f"{pre}.norm.weight"], eps)
    if cfg["mla_q_lora_rank"] > 0:
        cq = rms_norm(F.linear(n, p[f"{pre}.w_dq.weight"]), p[f"{pre}.q_norm.weight"], eps)
        q = F.linear(cq, p[f"{pre}.w_uq.weight"])
    else:
        q = F.linear(n, p[f"{pre}.wq.weight"])
    q = q.view(Bn, T, H, nope + rd).transpose(1, 2)                             # [B, H, T, nope+rope]
    if mutate == "mla_rope_whole_q":  # the whole query head rotated, not only its rotary part
        q = rope(q, theta, mutate)
    else:
        q = torch.cat((q[..., :nope], rope(q[..., nope:], theta, mutate)), dim=-1)
    ckv = F.linear(n, p[f"{pre}.w_dkv.weight"])                                  # [B, T, kvr + rope]
    if mutate == "mla_kpe_first_cols":  # the rotary key from the first columns, the latent after it
        k_pe, c = ckv[..., :rd], ckv[..., rd:]
    else:
        c, k_pe = ckv[..., :kvr], ckv[..., kvr:]
    kv = F.linear(rms_norm(c, p[f"{pre}.kv_norm.weight"], eps), p[f"{pre}.w_ukv.weight"])
    if mutate == "mla_kv_blocked":  # [all heads' k_nope, all heads' v] instead of [k_nope_h, v_h] per head
        k_nope = kv[..., :H * nope].view(Bn, T, H, nope).transpose(1, 2)
        v = kv[..., H * nope:].view(Bn, T, H, vd).transpose(1, 2)
    else:
        kv = kv.view(Bn, T, H, nope + vd).transpose(1, 2)                       # [B, H, T, nope+v]
        k_nope, v = kv[..., :nope], kv[..., nope:]
    k_pe = rope(k_pe.unsqueeze(1), theta, mutate)                                # [B, 1, T, rope]
    k_pe = k_pe.expand(Bn, H, T, rd)                                             # shared by every head
    if mutate == "mla_kpe_head0":  # the rotary key reaches head 0 only (the others get zeros)
        k_pe = torch.cat((k_pe[:, :1], torch.zeros_like(k_pe[:, 1:])), dim=1)
    if mutate == "mla_kpe_grad_head0":  # same forward, but the key's gradient is head 0's alone,
        k_pe = torch.cat((k_pe[:, :1], k_pe[:, 1:].detach()), dim=1)  # not the sum over heads
    k = torch.cat((k_nope, k_pe), dim=-1)
    scale = 1 / math.sqrt(nope if mutate == "mla_scale_nope" else nope + rd)
    out = causal_attention(q, k, v, scale, mutate)                               # [B, H, T, v]
    return F.linear(out.transpose(1, 2).reshape(Bn, T, H * vd), p[f"{pre}.wo.weight"])


def swiglu(n, p, pre, mutate):
    gate, up = p[f"{pre}.w1.weight"], p[f"{pre}.w3.weight"]
    if mutate == "swap_gate_up":
        gate, up = up, gate
    return F.linear(F.silu(F.linear(n, gate)) * F.linear(n, up), p[f"{pre}.w2.weight"])


def ffn(x, p, pre, cfg, mutate):
    return swiglu(rms_norm(x, p[f"{pre}.norm.weight"], cfg["norm_eps"]), p, pre, mutate)


def route(b, cfg, mutate):
    """Top-k experts by the biased scores b [..., E] (group-limited when n_groups > 1), as
    (idx [..., k], eligible mask [..., E], margin [...]): the margin is the smallest gap that
    decides the choice, between the last chosen and the best unchosen eligible expert, and
    between the last eligible group and the next (the oracle reports it: a near-tie could
    choose differently in fp32)."""
    E, k, ng, kg = (cfg["moe_routed_experts"], cfg["moe_top_k"], cfg["moe_n_groups"],
                    cfg["moe_topk_groups"])
    margin = torch.full(b.shape[:-1], math.inf, dtype=b.dtype)
    eligible = torch.ones_like(b, dtype=torch.bool)
    if ng > 1:
        bg = b.unflatten(-1, (ng, E // ng))                                      # [..., groups, G]
        if mutate == "group_score_max":  # a group scored by its best expert, not its best two
            gscore = bg.amax(dim=-1)
        else:
            gscore = bg.topk(min(2, E // ng), dim=-1).values.sum(dim=-1)
        gs = gscore.sort(dim=-1, descending=True).values
        if kg < ng:
            margin = torch.minimum(margin, gs[..., kg - 1] - gs[..., kg])
        top_groups = gscore.topk(kg, dim=-1).indices
        gmask = torch.zeros_like(gscore, dtype=torch.bool).scatter(-1, top_groups, True)
        eligible = gmask.repeat_interleave(E // ng, dim=-1)
    bm = b.masked_fill(~eligible, -math.inf)
    top = bm.topk(min(k + 1, E), dim=-1).values
    if k < E and bool(torch.isfinite(top[..., -1]).any()):
        gap = top[..., k - 1] - top[..., k]   # -inf - ... where fewer than k+1 are eligible
        margin = torch.minimum(margin, torch.where(torch.isfinite(top[..., k]), gap,
                                                   torch.full_like(gap, math.inf)))
    return bm.topk(k, dim=-1).indices, eligible, margin


def router_logits(n, w):
    """The router's product W_r n (its own function: tools/bench/torch_reference.py runs it in fp32
    under bf16 autocast, as Birkhoff keeps router logits and scores in f32)."""
    return F.linear(n, w)


def moe_ffn(x, p, pre, cfg, mutate, ctx):
    """DeepSeekMoE (src/model/moe.h), written from the DeepSeek-V3 equations:
        n = rmsnorm(x);  s = sigmoid(W_r n);  top-k experts by s + bias (bias: model state, no
        gradient; group-limited when n_groups > 1);  g_j = route_scale * s_j / sum_chosen s
        (unbiased);  F = sum_j g_j Expert_j(n) + Shared(n),  each expert a SwiGLU.
    Routed experts: a loop over experts, gathering each one's tokens and adding its weighted output
    back with index_add. Also returns the layer's sequence-wise balance loss term (or None)."""
    S, T, C = x.shape
    E, k = cfg["moe_routed_experts"], cfg["moe_top_k"]
    n = rms_norm(x, p[f"{pre}.norm.weight"], cfg["norm_eps"])
    logits = router_logits(n, p[f"{pre}.router.weight"])                         # [S, T, E]
    s = torch.softmax(logits, dim=-1) if mutate == "router_softmax" else torch.sigmoid(logits)
    bias = ctx["bias"][pre]
    with torch.no_grad():  # the choice is not differentiable; made in float64 from fp32 weights
        idx, _, margin = route(s if mutate == "topk_unbiased" else s + bias, cfg, mutate)
    ctx["check_route"](pre, idx, margin)
    chosen = s + bias if mutate == "gates_biased" else s
    s_sel = chosen.gather(-1, idx)                                               # [S, T, k]
    if mutate == "gates_unnormalised":
        gates = cfg["moe_route_scale"] * s_sel
    else:
        gates = cfg["moe_route_scale"] * s_sel / s_sel.sum(dim=-1, keepdim=True)
    nf, idf, gf = n.reshape(S * T, C), idx.reshape(S * T, k), gates.reshape(S * T, k)
    out = torch.zeros_like(nf)
    for e in range(E):
        tok, slot = (idf == e).nonzero(as_tuple=True)
        if tok.numel():
            y = swiglu(nf[tok], p, f"{pre}.experts.{e}", mutate)
            out = out.index_add(0, tok, (gf[tok, slot].unsqueeze(-1) * y).to(out.dtype))  # autocast: mixed
    out = out.view(S, T, C)
    if cfg["moe_shared_experts"] > 0 and mutate != "no_shared_expert":
        out = out + swiglu(n, p, f"{pre}.shared", mutate)

    # The sequence-wise balance loss of each micro-batch (its B sequences of T tokens):
    #   f_i = E / (k T) * #{tokens of the sequence that chose i} (a constant),
    #   P_i = mean over the sequence's tokens of s_i / sum_e s_e,
    #   L = alpha * (1/B) sum_seq sum_i f_i P_i,
    # in the objective weighted by the micro-batch's share of the step's tokens (all equal here,
    # so the step's term is alpha times the mean over all M * B sequences of sum_i f_i P_i).
    alpha = cfg["moe_balance_loss_weight"]
    if alpha <= 0:
        return out, None
    counts = F.one_hot(idx, E).amax(dim=-2).sum(dim=-2).to(x.dtype)            # [S, E]
    f = counts if mutate == "balance_no_unit" else counts * (E / (k * T))
    sn = s if mutate == "balance_p_unnormalised" else s / s.sum(dim=-1, keepdim=True)
    per_seq = (f * sn.mean(dim=-2)).sum(dim=-1)                                  # [S]
    M, B = cfg["micro_batches"], cfg["micro_batch_size"]
    share = 1.0 / M                                                              # N_m / N, every m
    per_mb = alpha / B * per_seq.view(M, B).sum(dim=-1)                          # [M]
    return out, (share * per_mb).sum()


def sinkhorn(L, iters, mutate):
    """L: [..., n, n] logits; Sinkhorn-Knopp, columns then rows, unrolled (autograd goes through)."""
    # The shift by the max only guards exp against overflow; the first column normalisation
    # cancels it exactly, so it carries no gradient (detached).
    P = torch.exp(L - L.detach().amax(dim=(-2, -1), keepdim=True))
    for _ in range(iters):
        if mutate == "sinkhorn_rows_first":
            P = P / P.sum(dim=-1, keepdim=True)
            P = P / P.sum(dim=-2, keepdim=True)
        else:
            P = P / P.sum(dim=-2, keepdim=True)  # each column (sum over rows i) to 1
            P = P / P.sum(dim=-1, keepdim=True)  # each row (sum over columns j) to 1
    return P


def mhc_coefficients(X, p, c, cfg, mutate):
    """X: [S, T, n, C] -> h_pre [S,T,n], h_post [S,T,n], H_res [S,T,n,n] (mhc)."""
    n = X.shape[-2]
    v = X.flatten(-2)                                                 # vec(X), stream-major [.., nC]
    rinv = torch.rsqrt(v.pow(2).mean(dim=-1, keepdim=True) + cfg["norm_eps"])
    z = F.linear(v, p[f"{c}.phi"])                                   # [.., m]
    alpha = p[f"{c}.alpha"]
    groups = torch.cat((alpha[0].expand(n), alpha[1].expand(n), alpha[2].expand(n * n)))
    logits = groups * rinv * z + p[f"{c}.bias"]
    h_pre = torch.sigmoid(logits[..., :n])
    h_post = torch.sigmoid(logits[..., n:2 * n]) * (1 if mutate == "post_no_factor2" else 2)
    L = logits[..., 2 * n:].unflatten(-1, (n, n))                    # row-major: L[i, j]
    h_res = sinkhorn(L, cfg["sinkhorn_iters"], mutate)
    if mutate == "mhc_res_transposed":
        h_res = h_res.transpose(-1, -2)
    return h_pre, h_post, h_res


def hc_coefficients(X, p, c, cfg, mutate):
    """X: [S, T, n, C] -> h_pre [S,T,n], h_post [S,T,n], H_res [S,T,n,n] (hc)."""
    if mutate == "hc_norm_joint":  # one rms over all streams (as mhc), not one per stream
        xn = X * torch.rsqrt(X.pow(2).mean(dim=(-2, -1), keepdim=True) + cfg["norm_eps"])
    else:
        xn = X * torch.rsqrt(X.pow(2).mean(dim=-1, keepdim=True) + cfg["norm_eps"])  # per stream
    u = torch.tanh(F.linear(xn, p[f"{c}.w"]))                        # u[.., i, k], [.., n, n+2]
    scale = p[f"{c}.scale"]
    h_pre = scale[0] * u[..., 0] + p[f"{c}.static_pre"]
    h_post = scale[1] * u[..., 1] + p[f"{c}.static_post"]
    dyn = u[..., 2:]                                                  # dyn[.., i, j] = u_i[2+j]
    if mutate != "hc_res_rows":
        dyn = dyn.transpose(-1, -2)                                   # H_res[j, i] = u_i[2+j]
    h_res = scale[2] * dyn + p[f"{c}.static_res"]
    return h_pre, h_post, h_res


def connect(X, sublayer, p, c, cfg, mutate):
    """One hc / mhc connector around `sublayer`: X' = H_res X + H_post^T F(H_pre X)."""
    coeffs = mhc_coefficients if cfg["residual_mode"] == "mhc" else hc_coefficients
    h_pre, h_post, h_res = coeffs(X, p, c, cfg, mutate)
    u = torch.einsum("stj,stjc->stc", h_pre, X)                      # [S, T, C]
    with torch.no_grad():  # conditioning: see pre_mix_gain in run()
        gain = float((X.pow(2).mean(dim=-1).amax(dim=-1).sqrt()
                      / (u.pow(2).mean(dim=-1) + cfg["norm_eps"]).sqrt()).max())
        if gain > cfg.get("pre_mix_gain", (0.0, ""))[0]:
            cfg["pre_mix_gain"] = (gain, c)
    f = sublayer(u)
    return torch.einsum("stij,stjc->stic", h_res, X) + h_post.unsqueeze(-1) * f.unsqueeze(-2)


def run_blocks(x, p, blocks, cfg, mutate, ctx):
    """x [S, T, C] through the blocks [(prefix, moe?)] with the residual mode's connectors (hc /
    mhc: expand to n streams first and collapse to their mean after, as the main stack and each
    MTP module do). Returns x and the blocks' balance loss terms."""
    attn = mla if cfg["attention"] == "mla" else attention
    balance = []

    def ffn_of(pre, is_moe):
        def f(u):
            if not is_moe:
                return ffn(u, p, pre, cfg, mutate)
            y, b = moe_ffn(u, p, pre, cfg, mutate, ctx)
            if b is not None:
                balance.append(b)
            return y
        return f

    if cfg["residual_mode"] == "baseline":
        for pre, is_moe in blocks:
            x = x + attn(x, p, f"{pre}.attn", cfg, mutate)
            x = x + ffn_of(f"{pre}.ffn", is_moe)(x)
        return x, balance
    n = cfg["streams"]
    X = x.unsqueeze(-2).expand(*x.shape[:-1], n, x.shape[-1])         # [S, T, n, C]
    for pre, is_moe in blocks:
        X = connect(X, lambda u: attn(u, p, f"{pre}.attn", cfg, mutate), p, f"{pre}.attn_conn", cfg, mutate)
        X = connect(X, ffn_of(f"{pre}.ffn", is_moe), p, f"{pre}.ffn_conn", cfg, mutate)
    return (X[..., 0, :] if mutate == "collapse_first_stream" else X.mean(dim=-2)), balance


def head_ce_sum(h, p, targets, cfg):
    """Sum of the cross-entropy over the non-ignored targets (< 0: ignored) of Head(h)."""
    logits = F.linear(rms_norm(h, p["final_norm.weight"], cfg["norm_eps"]), p["head.weight"])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1,
                           reduction="sum")


def step_loss(p, tokens, targets, cfg, mutate, ctx):
    """tokens, targets: [S, T] (all sequences of the step). Returns the objective's parts: the main
    cross-entropy (as the trainer reduces it), the MTP loss (mean over depths; None without MTP)
    and the balance loss (sum over the MoE layers; None without it). The objective is
    ce + mtp.weight * mtp + balance."""
    S, T = targets.shape
    x = F.embedding(tokens, p["embed.weight"])
    h, balance = run_blocks(x, p, [(f"layers.{l}", m) for l, m in enumerate(cfg["block_moe"])], cfg,
                            mutate, ctx)
    if mutate == "mean_over_valid":  # PyTorch's default reduction, not the trainer's
        logits = F.linear(rms_norm(h, p["final_norm.weight"], cfg["norm_eps"]), p["head.weight"])
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)
    else:
        ce = head_ce_sum(h, p, targets, cfg) / targets.numel()

    # Multi-token prediction (src/model/mtp.h), module k = 1..D at position t:
    #   h'^k = W_k [rmsnorm(h^{k-1}); rmsnorm(Emb(t_{t+k}))],  h^k = Block_k(h'^k),
    #   L^k = CE(Head(h^k), t_{t+k+1}) summed over the positions whose t_{t+k+1} exists, divided
    #   by those positions (B (T - k) per micro-batch; ignored targets included, as the main loss).
    # The step's data has only the targets (targets[t] = t_{t+1}): the input token t_{t+k} is
    # targets[t + k - 1], taken as token 0 where it is ignored or past the sequence (as
    # MtpHead::forward), and the target t_{t+k+1} is targets[t + k] (ignored past the sequence).
    D, mtp = cfg["mtp_depth"], None
    if D > 0:
        pad = torch.cat((targets, targets.new_full((S, D + 1), -1)), dim=1)
        h0, mtp = h, 0
        for j in range(D):
            k = j + 1
            off = k if mutate == "mtp_token_offset" else k - 1
            tok = pad[:, off:off + T].clamp(min=0)
            src = h0 if mutate == "mtp_chain_h0" else h
            hp = F.linear(torch.cat((rms_norm(src, p[f"mtp.{j}.norm_h.weight"], cfg["norm_eps"]),
                                     rms_norm(F.embedding(tok, p["embed.weight"]), p[f"mtp.{j}.norm_e.weight"],
                                              cfg["norm_eps"])), dim=-1), p[f"mtp.{j}.proj.weight"])
            h, bal = run_blocks(hp, p, [(f"mtp.{j}", cfg["mtp_moe"])], cfg, mutate, ctx)
            balance += bal
            positions = S * T if mutate == "mtp_denominator_all" else S * (T - k)
            mtp = mtp + head_ce_sum(h, p, pad[:, k:k + T], cfg) / positions / D
    return ce, mtp, (sum(balance) if balance else None)


# ---- comparison --------------------------------------------------------------------------------

def fmt_row(cols, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cols, widths)))


def print_table(rows, title):
    head = ("tensor", "shape", "|torch|", "|ref|", "rel err", "max abs err", "tol", "status")
    body = [(r["name"], "x".join(map(str, r["shape"])) or "scalar", f"{r['norm']:.3e}",
             f"{r['ref']:.3e}" + ("*" if r["ref"] != r["norm"] else " "), f"{r['rel']:.2e}",
             f"{r['maxabs']:.2e}", f"{r['tol']:.0e}", "ok" if r["ok"] else "FAIL")
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    print(title)
    print("  " + fmt_row(head, widths))
    for b in body:
        print("  " + fmt_row(b, widths))


def compare(name, got, ref, tol, ref_norm=None):
    """Relative Frobenius error of got against ref (float64 numpy arrays): ||got - ref|| / ref_norm,
    ref_norm = ||ref|| unless given (a connector's coefficient group, see conn_group)."""
    diff = got - ref
    norm = float(np.linalg.norm(ref))
    ref_norm = norm if ref_norm is None else max(ref_norm, norm)
    err = float(np.linalg.norm(diff))
    rel = err / ref_norm if ref_norm > 0 else (0.0 if err == 0 else math.inf)
    maxabs = float(np.max(np.abs(diff))) if diff.size else 0.0
    ok = bool(np.all(np.isfinite(got))) and rel <= tol   # NaN fails: rel <= tol is False
    return {"name": name, "shape": list(ref.shape), "norm": norm, "ref": ref_norm, "rel": rel,
            "maxabs": maxabs, "tol": tol, "ok": ok}


def conn_group(name):
    """The connector of a coefficient parameter (mhc alpha, bias; hc scale, static_*), else None.

    These tensors are measured against the norm of their connector's whole coefficient gradient
    (all of them together), not their own: their gradients are sums over tokens of the gradients
    of the coefficients (dh_pre, dh_post, dh_res, or the logits'), and some of those vanish by
    structure, not by chance. The sublayer F starts with an RMSNorm, so F(H_pre X) is invariant
    to the scale of H_pre X (up to eps) and the gradient along h_pre has sum_i h_pre[i] dh_pre[i]
    ~ 0 per token; in the first sublayer the streams are still identical, so every dh_pre[i] is
    ~ 0 and hc's static_pre gradient (and scale[0]'s) is eps-sized, pure cancellation: fp32
    cannot give it any relative accuracy (torch itself in float32 is off by 1e-3..0.3 there),
    although its absolute error is at the fp32 level of the connector's other coefficient
    gradients (a few 1e-7 of them), which is what the group norm measures. A slip in one of
    these tensors is still a 1e-2..1 error against the group (see --mutate)."""
    for conn in ("attn_conn.", "ffn_conn."):
        at = name.find(conn)
        if at >= 0 and name[at + len(conn):] in ("alpha", "bias", "scale", "static_pre",
                                                  "static_post", "static_res"):
            return name[:at + len(conn) - 1]
    return None


def run(args):
    tensors, meta = read_safetensors(args.file)
    if meta.get("format") != "birkhoff-oracle-step/1":
        raise OracleError(f"{args.file}: not an oracle_dump_step file (format {meta.get('format')!r})")
    ints = ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "seq_len", "micro_batches",
            "micro_batch_size")
    cfg = {k: int(meta[k]) for k in ints}
    cfg["residual_mode"] = meta.get("residual_mode", "baseline")
    if cfg["residual_mode"] not in ("baseline", "hc", "mhc"):
        raise OracleError(f"{args.file}: unknown residual_mode {cfg['residual_mode']!r}")
    cfg["streams"] = int(meta.get("streams", 1))
    cfg["sinkhorn_iters"] = int(meta.get("sinkhorn_iters", 0))
    if cfg["residual_mode"] != "baseline" and cfg["streams"] < 2:
        raise OracleError(f"{args.file}: {cfg['residual_mode']} with {cfg['streams']} streams")
    if cfg["residual_mode"] == "mhc" and cfg["sinkhorn_iters"] < 1:
        raise OracleError(f"{args.file}: mhc with sinkhorn_iters {cfg['sinkhorn_iters']}")
    cfg["attention"] = meta.get("attention", "mha")
    cfg["ffn"] = meta.get("ffn", "dense")
    if cfg["attention"] not in ("mha", "mla") or cfg["ffn"] not in ("dense", "moe"):
        raise OracleError(f"{args.file}: unknown attention {cfg['attention']!r} or ffn {cfg['ffn']!r}")
    if cfg["attention"] == "mla":
        for k in ("q_lora_rank", "kv_lora_rank", "qk_nope_dim", "qk_rope_dim", "v_head_dim"):
            cfg[f"mla_{k}"] = int(meta[f"mla_{k}"])
        if cfg["mla_qk_rope_dim"] % 2:
            raise OracleError(f"{args.file}: odd mla_qk_rope_dim")
    elif cfg["dim"] % cfg["n_heads"] or (cfg["dim"] // cfg["n_heads"]) % 2:
        raise OracleError(f"{args.file}: dim {cfg['dim']} does not split into {cfg['n_heads']} even heads")
    cfg["block_moe"] = [False] * cfg["n_layers"]
    cfg["mtp_depth"] = int(meta.get("mtp_depth", 0))
    cfg["mtp_weight"] = float(meta.get("mtp_weight", 0))
    if cfg["ffn"] == "moe":
        for k in ("first_dense_layers", "routed_experts", "shared_experts", "top_k", "n_groups",
                  "topk_groups"):
            cfg[f"moe_{k}"] = int(meta[f"moe_{k}"])
        cfg["moe_inter_dim"] = int(meta["moe_inter_dim"])
        # route_scale and alpha are fp32 in the C++ model (kernel arguments): use those values.
        cfg["moe_route_scale"] = float(np.float32(float(meta["moe_route_scale"])))
        cfg["moe_balance_loss_weight"] = float(np.float32(float(meta["moe_balance_loss_weight"])))
        cfg["router_bias_jitter"] = float(meta.get("router_bias_jitter", 0))
        cfg["block_moe"] = [l >= cfg["moe_first_dense_layers"] for l in range(cfg["n_layers"])]
        E, ng = cfg["moe_routed_experts"], cfg["moe_n_groups"]
        if ng < 1 or E % ng or not 1 <= cfg["moe_topk_groups"] <= ng or \
                not 1 <= cfg["moe_top_k"] <= E // ng * cfg["moe_topk_groups"]:
            raise OracleError(f"{args.file}: invalid routing E={E} groups={ng} "
                              f"topk_groups={cfg['moe_topk_groups']} top_k={cfg['moe_top_k']}")
    # An MTP module's block is an MoE block when the model has any (src/model/mtp.cpp).
    cfg["mtp_moe"] = any(cfg["block_moe"])
    applies = MUTATION_APPLIES.get(args.mutate)
    if applies and not applies[0](cfg):
        raise OracleError(f"--mutate {args.mutate} does not apply to this dump (needs {applies[1]})")
    # The C++ model holds theta and eps as fp32 (AttentionShape, Norm): use those values.
    cfg["rope_theta"] = float(np.float32(float(meta["rope_theta"])))
    cfg["norm_eps"] = float(np.float32(float(meta["norm_eps"])))
    M, B, T = cfg["micro_batches"], cfg["micro_batch_size"], cfg["seq_len"]
    desc = []
    if cfg["attention"] == "mla":
        desc.append(f"mla(q_lora={cfg['mla_q_lora_rank']} kv_lora={cfg['mla_kv_lora_rank']} "
                    f"nope={cfg['mla_qk_nope_dim']} rope={cfg['mla_qk_rope_dim']} v={cfg['mla_v_head_dim']})")
    if cfg["ffn"] == "moe":
        desc.append(f"moe(first_dense={cfg['moe_first_dense_layers']} E={cfg['moe_routed_experts']} "
                    f"shared={cfg['moe_shared_experts']} k={cfg['moe_top_k']} F={cfg['moe_inter_dim']} "
                    f"groups={cfg['moe_n_groups']}/{cfg['moe_topk_groups']} scale={cfg['moe_route_scale']:g} "
                    f"alpha={cfg['moe_balance_loss_weight']:g})")
    if cfg["mtp_depth"]:
        desc.append(f"mtp(depth={cfg['mtp_depth']} weight={cfg['mtp_weight']:g})")
    print(f"torch_oracle: {args.file}: V={cfg['vocab_size']} C={cfg['dim']} L={cfg['n_layers']} "
          f"H={cfg['n_heads']} F={cfg['ffn_dim']} T={T} M={M} B={B} theta={cfg['rope_theta']:g} "
          f"eps={cfg['norm_eps']:g} residual={cfg['residual_mode']}"
          + (f" n={cfg['streams']}" if cfg["residual_mode"] != "baseline" else "")
          + (f" sinkhorn_iters={cfg['sinkhorn_iters']}" if cfg["residual_mode"] == "mhc" else "")
          + "".join(" " + d for d in desc)
          + f" (torch {torch.__version__}, float64)"
          + (f", mutation {args.mutate}" if args.mutate else ""))

    # Every tensor the file must hold, with its dtype and shape; the names must match exactly.
    shapes = expected_params(cfg)
    want = {f"{k}.{n}": ("F32", shape) for k in ("param", "grad") for n, shape in shapes.items()}
    want.update({"tokens": ("I32", (M, B, T)), "targets": ("I32", (M, B, T)),
                 "loss": ("F64", (1,)), "loss_scale": ("F64", (1,))})
    moes = moe_prefixes(cfg)
    for pre in moes:
        want[f"state.{pre}.router.bias"] = ("F32", (cfg["moe_routed_experts"],))
        want[f"route.{pre}.idx"] = ("I32", (M, B, T, cfg["moe_top_k"]))
    if moes:
        want["balance_loss"] = ("F64", (1,))
    if cfg["mtp_depth"]:
        want["mtp_loss"] = ("F64", (1,))
    problems, unusable = [], []  # unusable: needed to run the model at all
    for n, (dt, shape) in want.items():
        if n not in tensors:
            problems.append(f"missing {n}")
        elif (tensors[n][0], tuple(tensors[n][1].shape)) != (dt, shape):
            problems.append(f"{n}: {tensors[n][0]} {list(tensors[n][1].shape)}, "
                            f"expected {dt} {list(shape)}")
        else:
            continue
        if not n.startswith("grad."):
            unusable.append(n)
    model = f"{cfg['residual_mode']} {cfg['attention']} {cfg['ffn']}" + (" mtp" if cfg["mtp_depth"] else "")
    for n in sorted(set(tensors) - set(want)):
        problems.append(f"unexpected tensor {n}" + (f" (not a parameter of the {model} model)"
                                                   if n.startswith(("param.", "grad.")) else ""))
    if unusable:
        print(f"torch_oracle: FAIL: the file does not hold the {model} model's step:")
        for p in problems:
            print("  " + p)
        return 1

    # The step as one batch of M*B sequences (micro-batches are independent sequences).
    tokens = torch.from_numpy(tensors["tokens"][1].astype(np.int64)).reshape(M * B, T)
    targets = torch.from_numpy(tensors["targets"][1].astype(np.int64)).reshape(M * B, T)
    V = cfg["vocab_size"]
    if tokens.min() < 0 or tokens.max() >= V or targets.max() >= V or targets.min() < -1:
        raise OracleError("tokens or targets out of range")
    n_ignored = int((targets < 0).sum())
    loss_scale = float(tensors["loss_scale"][1][0])
    if abs(loss_scale * M * B * T - 1) > 1e-6:  # the C++ side seeds with an fp32 1/(M*B*T)
        problems.append(f"loss_scale {loss_scale!r} is not 1/(M*B*T) = 1/{M * B * T}")

    # MoE routing: the biases (state) and the experts the C++ model chose, which this model must
    # choose too (the choice is not differentiable: a different choice is a different function).
    route_log = {}

    def check_route(pre, idx, margin):
        dumped = torch.from_numpy(tensors[f"route.{pre}.idx"][1].astype(np.int64)).reshape(idx.shape)
        same = (idx.sort(dim=-1).values == dumped.sort(dim=-1).values).all(dim=-1)   # as sets
        route_log[pre] = (int((~same).sum()), float(margin.min()),
                          float(margin[~same].min()) if bool((~same).any()) else None)

    ctx = {"bias": {pre: torch.from_numpy(tensors[f"state.{pre}.router.bias"][1].astype(np.float64))
                    for pre in moes},
           "check_route": check_route}

    params = {n: torch.tensor(tensors[f"param.{n}"][1], dtype=torch.float64, requires_grad=True)
              for n in shapes}
    ce, mtp, balance = step_loss(params, tokens, targets, cfg, args.mutate, ctx)
    objective = ce
    if mtp is not None:
        objective = objective + cfg["mtp_weight"] * mtp
    if balance is not None:
        objective = objective + balance
    if balance is not None and args.mutate is None:
        # How much the balance loss moves the gradients it reaches (the routers'): evidence that a
        # slip in it would show at the gradient tolerance.
        routers = [params[f"{pre}.router.weight"] for pre in moes]
        g_bal = torch.autograd.grad(balance, routers, retain_graph=True)
        g_all = torch.autograd.grad(objective, routers, retain_graph=True)
        share = max(float(a.norm() / b.norm()) for a, b in zip(g_bal, g_all))
        print(f"torch_oracle: balance loss: its share of the router gradients ||dL_bal/dW_r|| / "
              f"||dJ/dW_r|| is up to {share:.3f}")
    objective.backward()

    # Routing: the same experts for every token, else the comparison is meaningless.
    if route_log:
        bad_routes = {pre: r for pre, r in route_log.items() if r[0]}
        margin = min(r[1] for r in route_log.values())
        print(f"torch_oracle: routing: {len(route_log)} MoE layers, smallest float64 margin {margin:.3g} "
              f"(C++ fp32: {float(meta.get('route_min_margin', 'nan')):.3g}); the routing bias changes the "
              f"choice of {meta.get('route_bias_changed_tokens', '?')} token-layers")
        for pre, (count, _, m) in bad_routes.items():
            problems.append(f"{pre}: this model chooses other experts than the C++ model for {count} of "
                            f"{M * B * T} tokens (smallest margin among them {m:.3g}: "
                            + ("a near-tie, fp32 rounding may decide it; choose another seed)" if m < 1e-6 else
                               "not a near-tie: the routing differs)"))

    # Conditioning. hc's H_pre is unconstrained: where u = sum_i h_pre[i] X_i nearly cancels,
    # the sublayer's RMSNorm divides by a tiny rms and amplifies the rounding error of u (about
    # u_fp32 * rms(X_i)) by gain = max_i rms(X_i) / sqrt(mean(u^2) + eps) (1 in the baseline).
    # Measured over 24 seeds of the ctest hc shapes: gain < 50 kept every error <= 2.4e-5; gain
    # 95..150 gave up to 1.6e-4 (over the tolerance), with torch itself in float32 missing
    # float64 by up to 4e-4 on the same dumps. The ctest dumps keep the gain at 12 and below.
    cond = cfg.get("pre_mix_gain")
    if cond:
        print(f"torch_oracle: conditioning: max sublayer-input norm gain {cond[0]:.1f} (at {cond[1]})"
              + ("  WARNING: ill-conditioned (> 50): fp32 rounding is amplified, errors near or "
                 "over the tolerance are not by themselves evidence of a bug" if cond[0] > 50 else ""))
    rows = [compare("loss", tensors["loss"][1].astype(np.float64), np.array([ce.item()]), args.loss_rtol)]
    if mtp is not None:
        rows.append(compare("mtp_loss", tensors["mtp_loss"][1].astype(np.float64), np.array([mtp.item()]),
                            args.loss_rtol))
    if moes:
        rows.append(compare("balance_loss", tensors["balance_loss"][1].astype(np.float64),
                            np.array([balance.item() if balance is not None else 0.0]), args.loss_rtol))
    group_sq = {}
    for n in shapes:
        if conn_group(n):
            group_sq[conn_group(n)] = group_sq.get(conn_group(n), 0.0) + float(params[n].grad.pow(2).sum())
    for n in shapes:
        if f"grad.{n}" in tensors and tensors[f"grad.{n}"][1].shape == shapes[n]:
            g = conn_group(n)
            ref = params[n].grad.numpy() if params[n].grad is not None else np.zeros(shapes[n])
            rows.append(compare(f"grad.{n}", tensors[f"grad.{n}"][1].astype(np.float64), ref,
                                args.grad_rtol, math.sqrt(group_sq[g]) if g else None))
    bad = [r for r in rows if not r["ok"]]
    print(f"torch_oracle: loss bk {float(tensors['loss'][1][0]):.9f} torch {ce.item():.9f} "
          f"({M * B * T} tokens, {n_ignored} ignored)"
          + (f"; mtp loss bk {float(tensors['mtp_loss'][1][0]):.9f} torch {mtp.item():.9f}" if mtp is not None else "")
          + (f"; balance loss bk {float(tensors['balance_loss'][1][0]):.9g} torch "
             f"{balance.item() if balance is not None else 0.0:.9g}" if moes else ""))
    print_table(rows, "per-tensor errors (rel err = ||bk - torch||_F / |ref|, |ref| = ||torch||_F; "
                      "* = the norm of the connector's coefficient gradients, see conn_group):")
    worst = max(rows, key=lambda r: r["rel"] / r["tol"])
    if bad or problems:
        print(f"torch_oracle: FAIL: {len(bad)} of {len(rows)} tensors outside tolerance"
              + (f", {len(problems)} other problems" if problems else ""))
        for p in problems:
            print("  " + p)
        if bad:
            badness = lambda r: r["rel"] / r["tol"] if math.isfinite(r["rel"]) and math.isfinite(r["maxabs"]) else math.inf
            print_table(sorted(bad, key=badness, reverse=True)[:12], "worst tensors:")
        return 1
    print(f"torch_oracle: PASS: loss and {len(rows) - 1} gradients within tolerance "
          f"(worst {worst['name']} {worst['rel']:.2e}, tolerance {worst['tol']:.0e})")
    return 0


# Mutations that apply only to some dumps: name -> (does it apply to cfg, what it needs). The
# others (RoPE, mask, SwiGLU, norm, loss reduction slips) apply to every dump.
MUTATION_APPLIES = {
    # connectors
    "sinkhorn_rows_first": (lambda c: c["residual_mode"] == "mhc", "mhc"),   # rows before columns
    "post_no_factor2": (lambda c: c["residual_mode"] == "mhc", "mhc"),       # h_post = sigmoid
    "mhc_res_transposed": (lambda c: c["residual_mode"] == "mhc", "mhc"),    # X' = H_res^T X + ...
    "hc_res_rows": (lambda c: c["residual_mode"] == "hc", "hc"),   # stream i's dynamic res term in row i
    "hc_norm_joint": (lambda c: c["residual_mode"] == "hc", "hc"),  # one rms over all n*C values
    "collapse_first_stream": (lambda c: c["residual_mode"] != "baseline", "hc or mhc"),  # stream 0, not the mean
    # MLA
    "mla_rope_whole_q": (lambda c: c["attention"] == "mla", "mla"),    # RoPE over the whole query head
    "mla_kpe_head0": (lambda c: c["attention"] == "mla" and c["n_heads"] > 1, "mla, >= 2 heads"),
    "mla_kpe_grad_head0": (lambda c: c["attention"] == "mla" and c["n_heads"] > 1, "mla, >= 2 heads"),
    "mla_kpe_first_cols": (lambda c: c["attention"] == "mla", "mla"),  # rotary key from W_dkv's first columns
    "mla_kv_blocked": (lambda c: c["attention"] == "mla" and c["n_heads"] > 1, "mla, >= 2 heads"),
    "mla_scale_nope": (lambda c: c["attention"] == "mla", "mla"),      # scale 1/sqrt(nope)
    # MoE
    "router_softmax": (lambda c: c["ffn"] == "moe", "moe"),            # softmax scores (DeepSeek-V2)
    "topk_unbiased": (lambda c: c["ffn"] == "moe" and c["router_bias_jitter"] > 0,
                      "moe with --router-bias-jitter > 0"),            # choice by unbiased scores
    "gates_biased": (lambda c: c["ffn"] == "moe" and c["router_bias_jitter"] > 0,
                     "moe with --router-bias-jitter > 0"),             # gates from biased scores
    "gates_unnormalised": (lambda c: c["ffn"] == "moe", "moe"),        # no division by sum s_sel
    "group_score_max": (lambda c: c["ffn"] == "moe" and c["moe_n_groups"] > 1 and
                        c["moe_topk_groups"] < c["moe_n_groups"], "moe with groups > topk_groups"),
    "no_shared_expert": (lambda c: c["ffn"] == "moe" and c["moe_shared_experts"] > 0, "shared experts"),
    "balance_no_unit": (lambda c: c["ffn"] == "moe" and c["moe_balance_loss_weight"] > 0,
                        "moe with --balance-alpha > 0"),               # f without E/(kT)
    "balance_p_unnormalised": (lambda c: c["ffn"] == "moe" and c["moe_balance_loss_weight"] > 0,
                               "moe with --balance-alpha > 0"),        # P from s, not s / sum s
    # MTP
    "mtp_token_offset": (lambda c: c["mtp_depth"] > 0, "mtp"),         # module k embeds t_{t+k+1}
    "mtp_denominator_all": (lambda c: c["mtp_depth"] > 0, "mtp"),      # L^k over T, not T - k positions
    "mtp_chain_h0": (lambda c: c["mtp_depth"] > 1, "mtp depth >= 2"),  # every module from h^0
}
MUTATIONS = ("rope_sign", "rope_freq", "rope_interleaved", "no_causal_mask", "swap_gate_up",
             "norm_unweighted", "mean_over_valid") + tuple(MUTATION_APPLIES)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="safetensors file from oracle_dump_step")
    ap.add_argument("--loss-rtol", type=float, default=LOSS_RTOL)
    ap.add_argument("--grad-rtol", type=float, default=GRAD_RTOL)
    ap.add_argument("--mutate", choices=MUTATIONS,
                    help="inject this slip into the oracle's model (to show it is caught)")
    ap.add_argument("--expect-fail", action="store_true",
                    help="exit 0 only if the comparison fails (use with --mutate)")
    args = ap.parse_args()
    global MUTATE
    MUTATE = args.mutate
    try:
        status = run(args)
    except (OracleError, OSError, KeyError, ValueError) as e:
        print(f"torch_oracle: FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.expect_fail:
        print("torch_oracle: the comparison failed, as expected" if status else
              "torch_oracle: FAIL: the comparison passed but was expected to fail")
        return 0 if status else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
