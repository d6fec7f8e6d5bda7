#!/usr/bin/python3
"""Birkhoff against a peer: the model of a Birkhoff config trained in PyTorch, timed, and (with
--birkhoff) the same config trained by Birkhoff in the same run, as a table of tokens/s.

    /usr/bin/python3 tools/bench/torch_reference.py configs/tiny-cpu-mhc.yaml \\
        --steps 20 --warmup 3 --birkhoff build/bin/birkhoff [--compile] [--dtype f32|bf16] [--json OUT]

The PyTorch model is the independent oracle's (tests/oracle/torch_oracle.py: embedding,
baseline / hc / mhc connectors with an unrolled Sinkhorn, MHA or MLA, dense SwiGLU or
DeepSeekMoE, MTP, head), imported, on --device, in --dtype (below). The oracle is written for
float64 exactness, not speed; four of its functions are replaced *in this process only* by
equivalents a PyTorch user would write for speed (the oracle file and its tests are untouched):
  - rope: cos/sin tables in the activations' dtype cached per (T, D, dtype, device) (the oracle
    builds float64 tables on every call, which would promote the attention path to float64);
  - causal_attention: F.scaled_dot_product_attention(is_causal=True) where torch has it (>= 2.0),
    else the oracle's softmax(QK^T) V with a cached mask;
  - connect (hc / mhc): without the oracle's conditioning diagnostic (an extra reduction and a
    host sync per connector);
  - route (MoE): the top-k choice alone, without the oracle's near-tie margin.
Everything else (norms, connectors, Sinkhorn, MLA, MoE dispatch as a loop over experts with
index_add, balance loss, MTP, cross-entropy) is the oracle's code.

--dtype (default: bf16 on cuda, f32 on cpu, as Birkhoff's run.precision auto) is the PyTorch
side's precision. f32: parameters, activations and optimizer in float32 (on CUDA with TF32 off,
PyTorch's default for matmuls). bf16: PyTorch's standard AMP recipe, Birkhoff's mixed precision
as closely as it goes: each micro-batch's forward runs under torch.autocast(device_type,
bfloat16), so every matmul (linear, attention, einsum) computes in bf16 with fp32 accumulation
and the backward follows it, while the parameters, their gradients and AdamW's state stay
float32 (no GradScaler: bf16 keeps fp32's exponent range). What Birkhoff keeps in fp32 with bf16
activations (docs/cuda.md) is taken out of autocast: the hc / mhc connector coefficients (the
norm, phi / w projection, sigmoid / tanh and the whole Sinkhorn), the MoE router (logits,
sigmoid scores, gates, balance loss; for this moe_ffn is replaced by the oracle's without its
test mutations) and the cross-entropy (on fp32 logits; install_bf16 says which ops autocast
lowers on which device). The rest follows autocast's rules: the residual streams stay float32
(fp32 embedding + bf16 sublayer output; Birkhoff's are bf16), the hc / mhc stream mixing
(H_pre X, H_res X) is a bf16 batched matmul, and the norms' statistics and the softmax of the
torch < 2.0 attention fallback are fp32 on CUDA but bf16 on the CPU (CPU autocast casts no
elementwise op or reduction up). bf16 on the CPU works (it is how the option is checked without
a GPU) but is not a timing reference: Birkhoff's CPU trainer is f32. --dtype does not change
Birkhoff's precision (its run.precision; the table's dtype column shows both).

A training step is what Birkhoff's step is: num_microbatches = global_batch_size /
micro_batch_size forward/backward passes of micro_batch_size x seq_len random tokens with
accumulated gradients, global-norm clipping (training.max_grad_norm), AdamW (weight decay on
matrices only) and, with MoE, the loss-free routing-bias update. The step time is wall time
(torch.cuda.synchronize() on CUDA); tokens/s = tokens per step / median step time over --steps
timed steps after --warmup untimed ones. With --compile, the micro-batch loss is also run through
torch.compile (torch >= 2.0; a note says so when it is unavailable, as with Debian's torch 1.13);
with bf16 the autocast context and its fp32 regions are inside the compiled function.

With --birkhoff PATH the script runs `PATH train CONFIG` with training.steps = warmup + steps,
run.dir in a temporary directory, run.threads = --threads, per-step logging, no validation
during the run, no checkpoint and no TensorBoard, and takes the median of metrics.jsonl's
tokens_per_s over the steps after the warm-up. Birkhoff reads its tokens from data.train (pass
--set data.train=... if the config's shard is elsewhere); the token values do not change the
cost of a dense step (they do move the MoE routing, whose load balance affects the expert
GEMM sizes a little). --set key=value applies to both (the PyTorch side reads the resolved
config from `birkhoff config`, or from the YAML with config.h's defaults without --birkhoff).
PyTorch runs with OMP_WAIT_POLICY=PASSIVE unless the caller set it: with libgomp's default
spinning, Debian's torch starves its own OpenBLAS threads on a small machine (2.6x slower
steps on the 2-core VM), and with OPENBLAS_NUM_THREADS = --threads unless set (torch's
set_num_threads does not size OpenBLAS's own pool). --rounds R repeats the measurements R times, alternating the implementations, and reports the
median over rounds: on a shared VM this cancels slow drifts in the load.

Exit status: 0 on success, 1 when a run fails, 2 for a usage error (missing config or binary,
bad --device, CUDA requested but unavailable, bf16 unsupported).
"""

import argparse
import copy
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def die(msg, status=2):
    print(f"torch_reference: error: {msg}", file=sys.stderr)
    sys.exit(status)


# ---- configuration -----------------------------------------------------------------------------

# config.h's defaults for the keys used here (only needed without --birkhoff, whose `config`
# command prints the resolved config).
DEFAULTS = {
    "run": {"seed": 1234, "threads": 0},
    "model": {"vocab_size": 2048, "dim": 128, "n_layers": 4, "n_heads": 4, "ffn_dim": 384,
              "seq_len": 128, "rope_theta": 10000.0, "norm_eps": 1e-6, "init_std": 0.02,
              "attention": "mha", "ffn": "dense",
              "residual": {"mode": "baseline", "streams": 4, "sinkhorn_iters": 20,
                           "alpha_init": 0.01, "res_init_diag": 0.9, "phi_init_std": 0.0},
              "mla": {"q_lora_rank": 0, "kv_lora_rank": 64, "qk_nope_dim": 32, "qk_rope_dim": 16,
                      "v_head_dim": 32},
              "moe": {"first_dense_layers": 1, "routed_experts": 8, "shared_experts": 1, "top_k": 2,
                      "moe_inter_dim": 64, "n_groups": 1, "topk_groups": 1, "route_scale": 1.0,
                      "bias_update_speed": 1e-3, "balance_loss_weight": 1e-4},
              "mtp": {"depth": 0, "weight": 0.3}},
    "training": {"micro_batch_size": 16, "global_batch_size": 16, "max_grad_norm": 1.0},
    "optimizer": {"lr": 3e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1},
    "parallel": {"dp": 1},
}

NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def coerce(v):
    """PyYAML (YAML 1.1) reads `1e-06` as a string: turn such strings back into numbers."""
    if isinstance(v, dict):
        return {k: coerce(x) for k, x in v.items()}
    if isinstance(v, list):
        return [coerce(x) for x in v]
    if isinstance(v, str) and NUMBER.match(v.strip()):
        s = v.strip()
        return int(s) if re.match(r"^[-+]?\d+$", s) else float(s)
    return v


def merge(base, over):
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def load_config(args):
    """The resolved config as nested dicts: from `birkhoff config` when a binary is given (the
    authoritative resolution, --set included), else from the YAML file over DEFAULTS."""
    try:
        import yaml
    except ImportError:
        die(f"PyYAML is not importable with {sys.executable}: apt-get install python3-yaml")
    if args.birkhoff:
        cmd = [args.birkhoff, "config", args.config] + [a for s in args.set for a in ("--set", s)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            die(f"`{' '.join(cmd)}` failed:\n{r.stderr.strip() or r.stdout.strip()}")
        return coerce(yaml.safe_load(r.stdout)), "birkhoff config"
    with open(args.config) as f:
        conf = merge(copy.deepcopy(DEFAULTS), coerce(yaml.safe_load(f)))  # --set below edits it
    for s in args.set:
        key, sep, val = s.partition("=")
        if not sep:
            die(f"--set {s}: expected key=value")
        node = conf
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = coerce(yaml.safe_load(val))
    return conf, "YAML + config.h defaults"


def oracle_cfg(conf):
    """The oracle's flat cfg dict (see torch_oracle.run) for one micro-batch."""
    m, r, tr = conf["model"], conf["model"]["residual"], conf["training"]
    cfg = {k: int(m[k]) for k in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "seq_len")}
    cfg.update(residual_mode=r["mode"], streams=int(r["streams"]) if r["mode"] != "baseline" else 1,
               sinkhorn_iters=int(r["sinkhorn_iters"]), attention=m["attention"], ffn=m["ffn"],
               rope_theta=float(m["rope_theta"]), norm_eps=float(m["norm_eps"]),
               mtp_depth=int(m["mtp"]["depth"]), mtp_weight=float(m["mtp"]["weight"]),
               micro_batches=1, micro_batch_size=int(tr["micro_batch_size"]))
    if cfg["attention"] == "mla":
        for k in ("q_lora_rank", "kv_lora_rank", "qk_nope_dim", "qk_rope_dim", "v_head_dim"):
            cfg[f"mla_{k}"] = int(m["mla"][k])
    cfg["block_moe"] = [False] * cfg["n_layers"]
    if cfg["ffn"] == "moe":
        mo = m["moe"]
        for k in ("first_dense_layers", "routed_experts", "shared_experts", "top_k", "n_groups",
                  "topk_groups", "moe_inter_dim"):
            cfg[k if k.startswith("moe_") else f"moe_{k}"] = int(mo[k])
        cfg["moe_route_scale"] = float(mo["route_scale"])
        cfg["moe_balance_loss_weight"] = float(mo["balance_loss_weight"])
        cfg["moe_bias_update_speed"] = float(mo["bias_update_speed"])
        cfg["block_moe"] = [l >= cfg["moe_first_dense_layers"] for l in range(cfg["n_layers"])]
    cfg["mtp_moe"] = any(cfg["block_moe"])
    return cfg


# ---- the PyTorch model: the oracle's, with four hot spots replaced (see the docstring) ----------

def import_oracle():
    sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
    import torch_oracle  # exits 2 with a message when torch or numpy is missing
    import torch
    import torch.nn.functional as F
    oracle = torch_oracle
    tables = {}

    def rope(x, theta, mutate=None):
        T, D = x.shape[-2], x.shape[-1]
        key = (T, D, x.dtype, x.device, theta)
        if key not in tables:
            inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
            ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)
            tables[key] = (torch.cat((ang.cos(), ang.cos()), -1).to(x.device, x.dtype),
                           torch.cat((ang.sin(), ang.sin()), -1).to(x.device, x.dtype))
        cos, sin = tables[key]
        return x * cos + oracle.rotate_half(x) * sin

    sdpa = getattr(F, "scaled_dot_product_attention", None)
    masks = {}

    def causal_attention(q, k, v, scale, mutate=None):
        if sdpa is not None and abs(scale * math.sqrt(q.shape[-1]) - 1) < 1e-12:
            return sdpa(q, k, v, is_causal=True)
        T = q.shape[-2]
        if (T, q.device) not in masks:
            masks[(T, q.device)] = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        scores = (q @ k.transpose(-2, -1) * scale).masked_fill(masks[(T, q.device)], float("-inf"))
        return torch.softmax(scores, dim=-1) @ v

    def connect(X, sublayer, p, c, cfg, mutate=None):
        coeffs = oracle.mhc_coefficients if cfg["residual_mode"] == "mhc" else oracle.hc_coefficients
        h_pre, h_post, h_res = coeffs(X, p, c, cfg, mutate)
        f = sublayer(torch.einsum("stj,stjc->stc", h_pre, X))
        return torch.einsum("stij,stjc->stic", h_res, X) + h_post.unsqueeze(-1) * f.unsqueeze(-2)

    def route(b, cfg, mutate=None):
        E, k, ng, kg = (cfg["moe_routed_experts"], cfg["moe_top_k"], cfg["moe_n_groups"],
                        cfg["moe_topk_groups"])
        if ng > 1:
            bg = b.unflatten(-1, (ng, E // ng))
            gscore = bg.topk(min(2, E // ng), dim=-1).values.sum(dim=-1)
            gmask = torch.zeros_like(gscore, dtype=torch.bool).scatter(-1, gscore.topk(kg, dim=-1).indices, True)
            b = b.masked_fill(~gmask.repeat_interleave(E // ng, dim=-1), -math.inf)
        return b.topk(k, dim=-1).indices, None, None

    oracle.rope, oracle.causal_attention, oracle.connect, oracle.route = rope, causal_attention, connect, route
    return oracle, torch, sdpa is not None


def install_bf16(oracle, torch, device_type):
    """--dtype bf16: the parts of the model that Birkhoff keeps in fp32 also with bf16 activations
    (docs/cuda.md: connector parameters and coefficients, router logits / scores / gates, the
    per-token losses) taken out of autocast, in this process only.

    Under torch.autocast(bfloat16) every matmul (F.linear, @, bmm and so einsum) runs in bf16 on
    both CPU and CUDA; on CUDA exp, pow, rsqrt, sum, softmax, log_softmax and the losses are cast
    up to fp32, but on the CPU only the losses are (exp, pow, sum and softmax stay in their input's
    dtype), and sigmoid and tanh follow their input on both. So, left to autocast, the connector's
    phi / w projection and the router's logits would be bf16 GEMMs, and the sigmoids, tanh and
    Sinkhorn after them would see bf16 logits (and on the CPU also compute in bf16). Each region
    below runs under autocast(enabled=False) with its input cast to fp32 where it may be bf16:
      - connector coefficients (hc / mhc: the norm, projection, sigmoid / tanh and the unrolled
        Sinkhorn), input X: the streams are fp32 from the embedding (the autocast result of
        fp32 + bf16 is fp32) but bf16 from an MTP module's projection;
      - MoE router: the oracle's router_logits product in fp32, so the sigmoid scores, gates and
        the balance loss after it are fp32 too (the oracle casts each expert's gated output to
        its index_add target's dtype);
      - the loss: the head GEMM stays bf16, the cross-entropy runs on fp32 logits (autocast would
        cast them up too, on both devices; this makes it explicit).
    What stays under autocast: every other matmul (attention, FFN and expert GEMMs, the head, the
    connector's stream mixing H_pre X and H_res X), attention, RoPE and the norms (whose
    statistics autocast computes in fp32 on CUDA, bf16 on the CPU)."""
    F = torch.nn.functional

    def fp32():
        return torch.autocast(device_type=device_type, enabled=False)

    def in_fp32(coefficients):
        def wrapped(X, p, c, cfg, mutate=None):
            with fp32():
                return coefficients(X.float(), p, c, cfg, mutate)
        return wrapped

    def router_logits(n, w):
        with fp32():
            return F.linear(n.float(), w)

    def head_ce_sum(h, p, targets, cfg):
        logits = F.linear(oracle.rms_norm(h, p["final_norm.weight"], cfg["norm_eps"]), p["head.weight"])
        with fp32():
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=-1, reduction="sum")

    oracle.mhc_coefficients = in_fp32(oracle.mhc_coefficients)
    oracle.hc_coefficients = in_fp32(oracle.hc_coefficients)
    oracle.router_logits, oracle.head_ce_sum = router_logits, head_ce_sum


def init_params(oracle, torch, cfg, conf, device, gen):
    """Every parameter of expected_params(cfg), float32, initialised as Birkhoff does (docs/mhc.md
    for the connectors; output projections at init_std / sqrt(2 L))."""
    m, r = conf["model"], conf["model"]["residual"]
    std, n = float(m["init_std"]), cfg["streams"]
    out_std = std / math.sqrt(2 * cfg["n_layers"])
    params = {}
    sub = {}  # connector -> sublayer index k (hc static_pre = e_(k mod n))
    for name, shape in oracle.expected_params(cfg).items():
        leaf = name.rsplit(".", 1)[-1] if not name.endswith(".weight") else name.rsplit(".", 2)[-2]
        t = torch.empty(shape, dtype=torch.float32)
        if name.endswith(("norm.weight", "norm_h.weight", "norm_e.weight")):
            t.fill_(1.0)
        elif name.endswith(".phi") or name.endswith("_conn.w"):
            t.normal_(0, float(r["phi_init_std"]), generator=gen) if r["phi_init_std"] > 0 else t.zero_()
        elif name.endswith((".alpha", ".scale")):
            t.fill_(float(r["alpha_init"]))
        elif name.endswith(".bias"):  # mhc: pre -log(n-1), post 0, res log(d(n-1)/(1-d)) on the diagonal
            d = float(r["res_init_diag"])
            t.zero_()
            t[:n] = -math.log(n - 1)
            t[2 * n:].view(n, n).diagonal().fill_(math.log(d * (n - 1) / (1 - d)))
        elif name.endswith(".static_pre"):
            c = name.rsplit(".", 1)[0]
            k = sub.setdefault(c, len(sub))
            t.zero_()
            t[k % n] = 1.0
        elif name.endswith(".static_post"):
            t.fill_(1.0)
        elif name.endswith(".static_res"):
            t.copy_(torch.eye(n))
        elif leaf in ("wo", "w2"):
            t.normal_(0, out_std, generator=gen)
        else:
            t.normal_(0, std, generator=gen)
        params[name] = t.to(device).requires_grad_(True)
    return params


class TorchTrainer:
    def __init__(self, oracle, torch, conf, device, compile_, dtype="f32"):
        self.torch, self.oracle, self.device = torch, oracle, device
        self.amp = dtype == "bf16"  # install_bf16 has replaced the fp32 regions already
        self.cfg = cfg = oracle_cfg(conf)
        tr, opt = conf["training"], conf["optimizer"]
        self.B, self.T = int(tr["micro_batch_size"]), cfg["seq_len"]
        dp = int(conf.get("parallel", {}).get("dp", 1))
        self.M = int(tr["global_batch_size"]) // (self.B * dp)
        if self.M < 1 or self.M * self.B * dp != int(tr["global_batch_size"]):
            die(f"global_batch_size {tr['global_batch_size']} is not a multiple of micro_batch_size "
                f"{self.B} x dp {dp}")
        self.tokens_per_step = self.M * self.B * self.T  # one rank's share (dp = 1 here)
        gen = torch.Generator().manual_seed(int(conf["run"]["seed"]))
        self.params = init_params(oracle, torch, cfg, conf, device, gen)
        decay = [p for n, p in self.params.items() if p.dim() == 2 and not n.endswith(".static_res")]
        other = [p for n, p in self.params.items() if not (p.dim() == 2 and not n.endswith(".static_res"))]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(opt["weight_decay"])},
                                      {"params": other, "weight_decay": 0.0}],
                                     lr=float(opt["lr"]), betas=(float(opt["beta1"]), float(opt["beta2"])),
                                     eps=float(opt["eps"]))
        self.clip = float(tr["max_grad_norm"])
        self.moes = oracle.moe_prefixes(cfg)
        E = cfg.get("moe_routed_experts", 0)
        self.bias = {pre: torch.zeros(E, dtype=torch.float32, device=device) for pre in self.moes}
        self.load = {pre: torch.zeros(E, dtype=torch.float32, device=device) for pre in self.moes}

        def check_route(pre, idx, margin):  # the oracle's hook: count the experts' loads
            self.load[pre] += torch.bincount(idx.flatten(), minlength=E).to(torch.float32)

        self.ctx = {"bias": self.bias, "check_route": check_route}
        self.loss_fn = self.micro_loss
        self.compile_note = None
        if compile_:
            self.loss_fn = torch.compile(self.micro_loss)
        self.gen = torch.Generator().manual_seed(int(conf["run"]["seed"]) + 1)

    def micro_loss(self, params, tokens, targets):
        # --dtype bf16: PyTorch's AMP recipe. The forward runs under autocast (fp32 parameters,
        # cast to bf16 where an op computes in bf16); the backward, outside it, runs each op in the
        # dtype of its forward, and the gradients arrive in the parameters' fp32 (no GradScaler:
        # bf16 has fp32's exponent range). Inside torch.compile the context is traced with it.
        with self.torch.autocast(device_type=self.device.type, dtype=self.torch.bfloat16, enabled=self.amp):
            ce, mtp, bal = self.oracle.step_loss(params, tokens, targets, self.cfg, None, self.ctx)
        obj = ce
        if mtp is not None:
            obj = obj + self.cfg["mtp_weight"] * mtp
        if bal is not None:
            obj = obj + bal
        return obj, ce

    def step(self):
        torch = self.torch
        data = torch.randint(self.cfg["vocab_size"], (self.M, self.B, self.T + 1), generator=self.gen)
        data = data.to(self.device)
        loss = 0.0
        for m in range(self.M):
            obj, ce = self.loss_fn(self.params, data[m, :, :-1], data[m, :, 1:])
            (obj / self.M).backward()
            loss += ce.detach() / self.M
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        gamma = self.cfg.get("moe_bias_update_speed", 0.0)
        for pre in self.moes:  # loss-free balancing: b_i += gamma * sign(mean load - load_i)
            if gamma > 0:
                self.bias[pre] += gamma * torch.sign(self.load[pre].mean() - self.load[pre])
            self.load[pre].zero_()
        return loss

    def bench(self, warmup, steps):
        torch = self.torch
        sync = (lambda: torch.cuda.synchronize()) if self.device.type == "cuda" else (lambda: None)
        times, losses = [], []
        for i in range(warmup + steps):
            sync()
            t0 = time.perf_counter()
            loss = self.step()
            sync()
            dt = time.perf_counter() - t0
            losses.append(float(loss))
            if i >= warmup:
                times.append(dt)
        return times, losses


def run_torch(oracle, torch, conf, device, compile_, args):
    t = TorchTrainer(oracle, torch, conf, device, compile_, args.dtype)
    times, losses = t.bench(args.warmup, args.steps)
    med = statistics.median(times)
    return {"impl": "pytorch " + ("torch.compile" if compile_ else "eager"), "device": str(device),
            "dtype": args.dtype,
            "ms_per_step": med * 1e3, "tokens_per_s": t.tokens_per_step / med,
            "tokens_per_step": t.tokens_per_step, "step_ms": [x * 1e3 for x in times],
            "first_loss": losses[0], "last_loss": losses[-1]}


# ---- Birkhoff ----------------------------------------------------------------------------------

def run_birkhoff(args, threads):
    tmp = tempfile.mkdtemp(prefix="torch_reference_")
    try:
        total = args.warmup + args.steps
        # The same device and precision as the PyTorch side.
        ours = [f"training.steps={total}", f"run.dir={tmp}", f"run.threads={threads}",
                f"run.device={args.device}", f"run.precision={args.dtype}",
                "training.log_interval=1", "training.eval_interval=0", "training.stop_at_step=0",
                "optimizer.schedule.warmup_steps=0", "checkpoint.interval=0",
                "checkpoint.save_final=false", "logging.tensorboard=false", "logging.jsonl=true"]
        cmd = [args.birkhoff, "train", args.config, "--overwrite"] + \
              [a for s in list(args.set) + ours for a in ("--set", s)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=args.caller_env)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-20:])
            die(f"`{' '.join(cmd)}` exited with {r.returncode}:\n{tail}", 1)
        recs = {}
        with open(os.path.join(tmp, "metrics.jsonl")) as f:
            for line in f:
                rec = json.loads(line)
                recs[rec["step"]] = rec  # a later record of a step counts
        timed = [recs[s] for s in sorted(recs) if s > args.warmup]
        if len(timed) < 1:
            die(f"{tmp}/metrics.jsonl has no step after the warm-up", 1)
        log = r.stdout + r.stderr
        m = re.search(r"device\s+(cuda:\d+|cpu)\b", log)
        p = re.search(r"\|\s*(bf16|f32) activations", log)  # the GPU trainer's start-up line; the CPU's is f32
        tps = statistics.median(x["tokens_per_s"] for x in timed)
        return {"impl": "birkhoff", "device": m.group(1) if m else "?",
                "dtype": p.group(1) if p else "f32" if m and m.group(1) == "cpu" else "?",
                "ms_per_step": statistics.median(x["ms_per_step"] for x in timed), "tokens_per_s": tps,
                "step_ms": [x["ms_per_step"] for x in timed],
                "first_loss": recs[min(recs)]["loss"], "last_loss": recs[max(recs)]["loss"],
                "command": " ".join(cmd)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a Birkhoff YAML config (configs/*.yaml)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them (default 3)")
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto (default auto: cuda if available)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (torch >= 2.0)")
    ap.add_argument("--dtype", choices=("f32", "bf16"),
                    help="PyTorch's precision: f32, or bf16 autocast with fp32 weights and AdamW "
                         "(default: bf16 on cuda, f32 on cpu)")
    ap.add_argument("--birkhoff", metavar="PATH", help="the birkhoff binary: also time `birkhoff train`")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, for both implementations (repeatable)")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for both (torch.set_num_threads, run.threads); default: all cores")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the measurements, alternating implementations; median over rounds")
    ap.add_argument("--no-eager", action="store_true", help="with --compile: skip the eager run")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = ap.parse_args()

    if not os.path.isfile(args.config):
        die(f"config {args.config!r} not found")
    if args.birkhoff:
        if not (os.path.isfile(args.birkhoff) and os.access(args.birkhoff, os.X_OK)):
            die(f"--birkhoff {args.birkhoff!r} is not an executable file (build it: cmake --build build)")
        args.birkhoff = os.path.abspath(args.birkhoff)
    if args.device not in ("cpu", "cuda", "auto"):
        die(f"--device {args.device!r}: expected cpu, cuda or auto")
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        die("--steps and --rounds must be >= 1, --warmup >= 0")

    # Debian's torch (libgomp) and its OpenBLAS each keep a thread pool; with GOMP's default
    # active waiting, the spinning OpenMP threads starve OpenBLAS's on a small machine (measured on
    # the 2-core VM: 1040 ms/step instead of 400). Passive waiting unless the user chose: it must be
    # set before torch loads. Birkhoff gets the caller's environment unchanged.
    caller_env = dict(os.environ)
    omp_note = None
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        omp_note = "PyTorch runs with OMP_WAIT_POLICY=PASSIVE (set OMP_WAIT_POLICY to choose another)"
    # torch.set_num_threads sets the OpenMP pool only; the OpenBLAS under Debian's torch sizes its
    # own pool from the cores (so --threads 1 would still run its GEMMs on 2): match it.
    threads = args.threads or os.cpu_count()
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    args.caller_env = caller_env
    oracle, torch, has_sdpa = import_oracle()
    if args.device == "cuda" and not torch.cuda.is_available():
        die(f"--device cuda, but this torch ({torch.__version__}) has no usable CUDA device")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    args.device = device.type  # resolved: the Birkhoff run uses the same (run_birkhoff)
    torch.set_num_threads(threads)
    if args.dtype is None:
        args.dtype = "bf16" if device.type == "cuda" else "f32"
    if args.dtype == "bf16":
        if not hasattr(torch, "autocast"):
            die(f"--dtype bf16 needs torch.autocast (torch >= 1.10; this is {torch.__version__})")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            die(f"--dtype bf16: {torch.cuda.get_device_name(device)} does not support bf16 in this torch")
        install_bf16(oracle, torch, device.type)
    conf, source = load_config(args)

    notes = [omp_note] if omp_note else []
    compile_ok = False
    if args.compile:
        if not hasattr(torch, "compile"):
            notes.append(f"torch.compile is unavailable in torch {torch.__version__} (needs >= 2.0): "
                         "only eager PyTorch is timed")
        else:
            compile_ok = True
    if not has_sdpa:
        notes.append(f"torch {torch.__version__} has no scaled_dot_product_attention: attention is "
                     "softmax(QK^T)V with a cached causal mask")

    m = conf["model"]
    print(f"torch_reference: {args.config} ({source}): {m['residual']['mode']} {m['attention']} {m['ffn']}, "
          f"V={m['vocab_size']} C={m['dim']} L={m['n_layers']} T={m['seq_len']}, batch "
          f"{conf['training']['global_batch_size']} x {m['seq_len']} (micro {conf['training']['micro_batch_size']}); "
          f"torch {torch.__version__} on {device}, {threads} threads, "
          + ("bf16 autocast (fp32 weights, gradients and AdamW)" if args.dtype == "bf16" else "float32")
          + f"; {args.warmup} warm-up + {args.steps} timed steps"
          + (f", {args.rounds} rounds" if args.rounds > 1 else ""))
    for n in notes:
        print(f"torch_reference: note: {n}")

    kinds = ([] if (args.no_eager and compile_ok) else [False]) + ([True] if compile_ok else [])
    per_round = []
    for r in range(args.rounds):
        rows = []
        for c in kinds:
            try:
                rows.append(run_torch(oracle, torch, conf, device, c, args))
            except Exception as e:  # torch.compile failing on this model is a result, not a crash
                if not c:
                    raise
                notes.append(f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                print(f"torch_reference: note: {notes[-1]}")
                kinds = [k for k in kinds if not k]
                continue
            print(f"torch_reference: round {r + 1}: {rows[-1]['impl']}: {rows[-1]['ms_per_step']:.1f} ms/step, "
                  f"{rows[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
        if args.birkhoff:
            rows.append(run_birkhoff(args, threads))
            print(f"torch_reference: round {r + 1}: birkhoff: {rows[-1]['ms_per_step']:.1f} ms/step, "
                  f"{rows[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
        per_round.append(rows)

    impls = [row["impl"] for row in per_round[-1]]
    result = []
    for impl in impls:
        rs = [row for rows in per_round for row in rows if row["impl"] == impl]
        result.append(dict(rs[-1], tokens_per_s=statistics.median(x["tokens_per_s"] for x in rs),
                           ms_per_step=statistics.median(x["ms_per_step"] for x in rs),
                           rounds_tokens_per_s=[x["tokens_per_s"] for x in rs]))
    bk = next((x["tokens_per_s"] for x in result if x["impl"] == "birkhoff"), None)
    for x in result:
        x["vs_birkhoff"] = x["tokens_per_s"] / bk if bk else None

    head = ("implementation", "device", "dtype", "threads", "ms/step", "tokens/s", "vs Birkhoff", "loss 1st -> last")
    body = [(x["impl"], x["device"], x["dtype"], str(threads), f"{x['ms_per_step']:.1f}", f"{x['tokens_per_s']:.0f}",
             f"{x['vs_birkhoff']:.2f}x" if x["vs_birkhoff"] else "-",
             f"{x['first_loss']:.4f} -> {x['last_loss']:.4f}") for x in result]
    w = [max(len(s) for s in col) for col in zip(head, *body)]
    print(f"\n{args.config}: median over {args.steps} timed steps"
          + (f", median of {args.rounds} rounds" if args.rounds > 1 else ""))
    for row in (head,) + tuple(body):
        print("  " + "  ".join(s.ljust(w[i]) if i < 3 else s.rjust(w[i]) for i, s in enumerate(row)))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "torch": torch.__version__, "dtype": args.dtype, "threads": threads,
                       "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
                       "set": args.set, "notes": notes, "results": result}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
