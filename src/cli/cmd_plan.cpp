// birkhoff plan CONFIG: parameter counts, FLOPs and memory per pipeline stage of a config under a
// parallel layout, computed from the shapes alone (model/model_plan.h; docs/model.md).
#include <fmt/format.h>

#include <charconv>

#include "cli/commands.h"
#include "config/load.h"
#include "core/error.h"
#include "model/model_plan.h"

namespace bk {

namespace {

const char* kPlanUsage =
    "usage: birkhoff plan CONFIG.yaml [--set key.path=value]... [--pp P] [--dp D] [--ep E] [--dtype bf16|f32]\n"
    "  prints total and active parameters (with a breakdown), FLOPs per token and per step, and per\n"
    "  pipeline stage the parameters per rank, their weight/gradient/optimizer memory and the\n"
    "  activation memory under 1F1B\n"
    "  --pp, --dp, --ep   parallel layout (default: the config's parallel section)\n"
    "  --dtype            activation and weight dtype (default: f32 when run.device is cpu, else bf16)";

int parse_layout_value(const ParsedArgs& a, const std::string& option, int fallback) {
  const std::string v = a.value(option);
  if (v.empty()) return fallback;
  int out = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  BK_CHECK(ec == std::errc() && end == v.data() + v.size() && out >= 1, "{}: expected an integer >= 1, got '{}'\n{}",
           option, v, kPlanUsage);
  return out;
}

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v), out = v < 0 ? "-" : "";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

// Three significant digits: 2.98B, 616M, 2.95M, 38.1K.
std::string short_count(double v) {
  const char* unit = "";
  if (v >= 1e9) v /= 1e9, unit = "B";
  else if (v >= 1e6) v /= 1e6, unit = "M";
  else if (v >= 1e3) v /= 1e3, unit = "K";
  if (*unit == 0) return fmt::format("{:.0f}", v);
  if (v >= 100) return fmt::format("{:.0f}{}", v, unit);
  if (v >= 10) return fmt::format("{:.1f}{}", v, unit);
  return fmt::format("{:.2f}{}", v, unit);
}

std::string gib(double bytes) {
  if (bytes < double(1ull << 30)) return fmt::format("{:.1f} MiB", bytes / double(1ull << 20));
  return fmt::format("{:.2f} GiB", bytes / double(1ull << 30));
}

}  // namespace

int cmd_plan(const Args& args) {
  ParsedArgs a = parse_args(args, {}, kPlanUsage, {"--pp", "--dp", "--ep", "--dtype"});
  if (a.help) return fmt::print("{}\n", kPlanUsage), 0;
  BK_CHECK(a.positional.size() == 1, "plan needs exactly one config file\n{}", kPlanUsage);
  // --pp/--dp/--ep are overrides of the parallel section, checked with the rest of the config
  // (the batch rules name them as --set arguments).
  std::vector<std::string> sets = a.sets;
  for (const char* option : {"--pp", "--dp", "--ep"}) {
    const int v = parse_layout_value(a, option, 0);
    if (v > 0) sets.push_back(fmt::format("parallel.{}={}", option + 2, v));
  }
  const Config cfg = load_config(a.positional[0], sets);
  const std::string dtype = a.value("--dtype", cfg.run.device == "cpu" ? "f32" : "bf16");
  BK_CHECK(dtype == "bf16" || dtype == "f32", "--dtype: expected bf16 or f32, got '{}'\n{}", dtype, kPlanUsage);

  Layout L;
  L.pp = cfg.parallel.pp;
  L.dp = cfg.parallel.dp;
  L.ep = cfg.parallel.ep;
  L.act_bytes = dtype == "bf16" ? 2 : 4;
  L.micro_batch_size = cfg.training.micro_batch_size;
  L.num_microbatches = cfg.num_microbatches();
  L.recompute = cfg.training.recompute;
  L.recompute_block = cfg.training.recompute_block;

  const ModelConfig& m = cfg.model;
  const ModelCounts c = count_model(m);
  const std::vector<StagePlan> stages = plan_stages(c, m, L);

  // ---- model ----
  fmt::print("plan: {}\n", cfg.source);
  std::string ffn_desc = m.ffn == "moe"
                             ? fmt::format("moe ffn ({} dense + {} MoE blocks; {} routed experts, top {}, {} shared, width {})",
                                           c.dense_layers, c.moe_layers, m.moe.routed_experts, m.moe.top_k,
                                           m.moe.shared_experts, m.moe.moe_inter_dim)
                             : fmt::format("dense ffn (width {})", m.ffn_dim);
  std::string attn_desc =
      m.attention == "mla"
          ? fmt::format("mla attention (q rank {}, kv rank {}, qk {}+{}, v {})", m.mla.q_lora_rank,
                        m.mla.kv_lora_rank, m.mla.qk_nope_dim, m.mla.qk_rope_dim, m.mla.v_head_dim)
          : fmt::format("mha attention (head dim {})", m.dim / m.n_heads);
  fmt::print("model: {} layers, dim {}, {} heads, {}, {}, {} residual ({} stream{}), vocab {}, seq {}{}\n\n",
             m.n_layers, m.dim, m.n_heads, attn_desc, ffn_desc, m.residual.mode, m.streams(),
             m.streams() == 1 ? "" : "s", m.vocab_size, m.seq_len,
             m.mtp.depth ? fmt::format(", MTP depth {}", m.mtp.depth) : "");

  // ---- parameters ----
  auto row = [](const std::string& name, int64_t v, const std::string& note = "") {
    fmt::print("  {:<22} {:>16} {:>8}{}\n", name, with_commas(v), short_count(double(v)),
               note.empty() ? "" : "   " + note);
  };
  fmt::print("parameters\n");
  row("total", c.total);
  row("active", c.active, "per token: all but the embedding table and the routed experts a token skips");
  row("embedding", c.embedding, fmt::format("[{}, {}], a lookup (not active)", m.vocab_size, m.dim));
  row("head", c.head, fmt::format("[{}, {}], untied", m.vocab_size, m.dim));
  row("attention", c.attention,
      fmt::format("{} x {} ({} per layer with norms)", m.n_layers, m.attention, with_commas(c.attention_per_layer)));
  if (c.dense_layers)
    row("dense FFN", c.dense_ffn,
        fmt::format("{} x width {} ({} per layer with norm)", c.dense_layers, m.ffn_dim,
                    with_commas(c.dense_ffn_per_layer)));
  if (c.moe_layers) {
    const int64_t expert = 3 * int64_t(m.moe.moe_inter_dim) * m.dim;
    row("MoE routed experts", c.moe_routed,
        fmt::format("{} layers x {} x {}", c.moe_layers, m.moe.routed_experts, with_commas(expert)));
    row("MoE shared experts", c.moe_shared,
        fmt::format("{} layers x {} x {}", c.moe_layers, m.moe.shared_experts, with_commas(expert)));
    row("MoE routers", c.moe_router, fmt::format("{} layers x [{}, {}]", c.moe_layers, m.moe.routed_experts, m.dim));
  }
  row("connectors", c.connectors,
      m.streams() == 1 ? "baseline residual: none"
                       : fmt::format("{} sublayers x {} ({}, n = {})", c.sublayers.size(),
                                     with_commas(c.connector_per_sublayer), m.residual.mode, m.streams()));
  row("norms", c.norms, "RMSNorm weights (sublayers, MLA latents, final)");
  if (m.mtp.depth) row("MTP", c.mtp, fmt::format("{} x {} (shares embedding and head)", m.mtp.depth, with_commas(c.mtp_per_module)));
  if (c.routing_bias)
    fmt::print("  (plus {} routing-bias values: model state updated by the balancing rule, not parameters)\n",
               with_commas(c.routing_bias));

  // ---- compute ----
  const double tokens_per_step = double(cfg.training.global_batch_size) * m.seq_len;
  fmt::print("\ncompute\n");
  fmt::print("  {:<22} {:>16.4g}   6 x {} active matmul params + causal attention {:.4g}\n", "FLOPs per token",
             c.flops_per_token, with_commas(c.matmul_active), c.attention_flops_per_token);
  fmt::print("  {:<22} {:>16.4g}   {} sequences x {} tokens\n", "FLOPs per step", c.flops_per_token * tokens_per_step,
             cfg.training.global_batch_size, m.seq_len);

  // ---- layout ----
  fmt::print("\nlayout: pp {} x ep {} x dp {} = {} rank{}, 1F1B, {} micro-batch{} of {} x {} tokens per step and replica, {}\n",
             L.pp, L.ep, L.dp, L.pp * L.ep * L.dp, L.pp * L.ep * L.dp == 1 ? "" : "s", L.num_microbatches, L.num_microbatches == 1 ? "" : "es",
             L.micro_batch_size, m.seq_len, dtype);
  fmt::print("  state per param: {} bytes ({}); ZeRO-1 shards the {}-byte optimizer part over the {} dp replica{}\n",
             param_state_bytes(L.act_bytes),
             L.act_bytes == 2 ? "bf16 weight + bf16 grad + fp32 master + 2 fp32 moments"
                              : "f32 weight + f32 grad + 2 f32 moments",
             optimizer_state_bytes(L.act_bytes), L.dp, L.dp == 1 ? "" : "s");
  fmt::print("  {:>5}  {:<22} {:>14} {:>12} {:>12} {:>14} {:>9} {:>12} {:>12}\n", "stage", "sublayers", "params/rank",
             "state", "ZeRO-1", "act/micro", "in flight", "act peak", "total");
  for (size_t s = 0; s < stages.size(); ++s) {
    const StagePlan& st = stages[s];
    std::string what = fmt::format("{}-{}", st.first, st.end - 1);
    if (s == 0) what = "embed+" + what;
    if (s + 1 == stages.size()) what += m.mtp.depth ? "+head+mtp" : "+head";
    fmt::print("  {:>5}  {:<22} {:>14} {:>12} {:>12} {:>14} {:>9} {:>12} {:>12}\n", s, what,
               with_commas(st.params_per_rank), gib(st.state_bytes), gib(st.state_bytes_zero1),
               gib(st.saved_bytes_per_microbatch), st.in_flight, gib(st.activation_bytes),
               gib(st.state_bytes_zero1 + st.activation_bytes));
  }
  fmt::print("  sublayers are numbered 2*layer (attention) and 2*layer+1 (FFN); experts are split over ep,\n"
             "  everything else is replicated; activations are what each layer saves for its backward\n"
             "  ({}), in {} with fp32 statistics; total = ZeRO-1 state + activation peak\n",
             L.recompute == "none" ? std::string("no recomputation")
                                   : fmt::format("training.recompute {}, blocks of {} sublayers, plus one block "
                                                 "rebuilt at a time", L.recompute,
                                                 L.recompute_block > 0 ? std::to_string(L.recompute_block)
                                                                       : std::string("a stage's")),
             dtype);
  if (c.estimates) {
    std::string which;
    for (const char* kind : {"mla", "moe"})
      for (const SublayerCount& sl : c.sublayers)
        if (sl.estimated && sl.kind == kind) {
          which += std::string(which.empty() ? "" : ", ") + kind;
          break;
        }
    if (m.mtp.depth && which.empty()) which = "mtp";
    fmt::print("  note: saved activations of the {} layers are estimates until those layers are implemented\n", which);
  }
  return 0;
}

}  // namespace bk
