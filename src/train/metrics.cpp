#include "train/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <sys/resource.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace bk {

MetricsLog::MetricsLog(const std::string& path, const std::string& tensorboard_dir, int64_t first_step) {
  if (!path.empty()) {
    out_.open(path, std::ios::app);
    BK_CHECK(out_.good(), "cannot open metrics file {}", path);
  }
  if (!tensorboard_dir.empty()) {
    tb_ = std::make_unique<TensorBoardWriter>(tensorboard_dir);
    tb_->write_session_start(first_step);
  }
}

MetricsLog::~MetricsLog() = default;

std::string MetricsLog::tensorboard_file() const { return tb_ ? tb_->path() : std::string(); }

double peak_rss_gb() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) * 1024.0 / double(1 << 30);  // Linux: ru_maxrss in KiB
}

namespace {
// Sublayer l of the connector statistics: block l / 2, attention when l is even, else FFN.
std::string sublayer_name(size_t l) { return fmt::format("layers.{}.{}", l / 2, l % 2 == 0 ? "attn" : "ffn"); }

const std::vector<std::pair<const char*, std::vector<double> ConnectorStats::*>> kConnectorVectors = {
    {"h_res_diag", &ConnectorStats::h_res_diag}, {"row_err", &ConnectorStats::row_err},
    {"col_err", &ConnectorStats::col_err},       {"h_pre", &ConnectorStats::h_pre},
    {"h_post", &ConnectorStats::h_post},         {"fwd_gain", &ConnectorStats::fwd_gain},
    {"bwd_gain", &ConnectorStats::bwd_gain},     {"comp_fwd_gain", &ConnectorStats::comp_fwd_gain},
    {"comp_bwd_gain", &ConnectorStats::comp_bwd_gain}};
}  // namespace

Scalars tensorboard_scalars(const StepMetrics& m) {
  Scalars s = {{"train/loss", m.loss},
               {"train/grad_norm", m.grad_norm},
               {"train/clip_scale", m.clip_scale},
               {"train/lr", m.lr},
               {"train/tokens", double(m.tokens)},
               {"train/skipped_updates", double(m.skipped_updates)},
               {"perf/tokens_per_s", m.tokens_per_s},
               {"perf/ms_per_step", m.ms_per_step},
               {"perf/mfu", m.mfu},
               {"perf/elapsed_s", m.elapsed_s},
               {"perf/mem_gb", m.mem_gb},
               {"perf/act_gb", m.act_gb}};
  if (m.gpu_mem_gb) s.emplace_back("perf/gpu_mem_gb", *m.gpu_mem_gb);
  if (m.gpu_reserved_gb) s.emplace_back("perf/gpu_reserved_gb", *m.gpu_reserved_gb);
  if (m.val_loss) {
    s.emplace_back("val/loss", *m.val_loss);
    s.emplace_back("val/ppl", std::exp(*m.val_loss));
  }
  if (m.mtp_loss) s.emplace_back("train/mtp_loss", *m.mtp_loss);
  if (m.connectors) {
    const ConnectorStats& c = *m.connectors;
    s.emplace_back("connector/amax_fwd_max", c.max_comp_fwd_gain);
    s.emplace_back("connector/amax_bwd_max", c.max_comp_bwd_gain);
    for (const auto& [key, member] : kConnectorVectors) {
      const std::vector<double>& v = c.*member;
      for (size_t l = 0; l < v.size(); ++l) s.emplace_back(fmt::format("connector/{}/{}", sublayer_name(l), key), v[l]);
    }
  }
  for (const MoeStats& l : m.moe) {
    for (const auto& [key, v] : {std::pair<const char*, double>{"load_max", l.load_max}, {"load_min", l.load_min},
                                 {"load_cv", l.load_cv}, {"bias_min", l.bias_min}, {"bias_max", l.bias_max},
                                 {"balance_loss", l.balance_loss}})
      s.emplace_back(fmt::format("moe/{}/{}", l.name, key), v);
  }
  return s;
}

void MetricsLog::write(const StepMetrics& m) {
  if (tb_) tb_->write_scalars(m.step, tensorboard_scalars(m));
  if (!out_.is_open()) return;
  nlohmann::ordered_json j = {
      {"step", m.step},          {"loss", m.loss},   {"grad_norm", m.grad_norm},
      {"clip_scale", m.clip_scale}, {"lr", m.lr},    {"tokens", m.tokens},
      {"tokens_per_s", m.tokens_per_s}, {"ms_per_step", m.ms_per_step}, {"mfu", m.mfu},
      {"elapsed_s", m.elapsed_s}, {"mem_gb", m.mem_gb}, {"act_gb", m.act_gb},
      {"skipped_updates", m.skipped_updates},
  };
  if (m.gpu_mem_gb) j["gpu_mem_gb"] = *m.gpu_mem_gb;
  if (m.gpu_reserved_gb) j["gpu_reserved_gb"] = *m.gpu_reserved_gb;
  if (m.skipped) j["skipped"] = true;
  if (m.val_loss) {
    j["val_loss"] = *m.val_loss;
    j["val_ppl"] = std::exp(*m.val_loss);
  }
  if (m.connectors) {
    const ConnectorStats& c = *m.connectors;
    j["conn"] = {{"amax_fwd_max", c.max_comp_fwd_gain}, {"amax_bwd_max", c.max_comp_bwd_gain},
                 {"h_res_diag", c.h_res_diag}, {"row_err", c.row_err}, {"col_err", c.col_err},
                 {"h_pre", c.h_pre}, {"h_post", c.h_post}, {"fwd_gain", c.fwd_gain},
                 {"bwd_gain", c.bwd_gain}, {"comp_fwd_gain", c.comp_fwd_gain},
                 {"comp_bwd_gain", c.comp_bwd_gain}};
  }
  if (m.mtp_loss) j["mtp_loss"] = *m.mtp_loss;
  if (!m.moe.empty()) {
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (const MoeStats& l : m.moe)
      layers.push_back({{"layer", l.name}, {"load_max", l.load_max}, {"load_min", l.load_min},
                        {"load_cv", l.load_cv}, {"bias_min", l.bias_min}, {"bias_max", l.bias_max},
                        {"balance_loss", l.balance_loss}, {"load", l.load}});
    j["moe"] = layers;
  }
  out_ << j.dump() << '\n';
  out_.flush();
}

std::string human(double x) {
  if (x >= 1e9) return fmt::format("{:.2f}B", x / 1e9);
  if (x >= 1e6) return fmt::format("{:.2f}M", x / 1e6);
  if (x >= 1e3) return fmt::format("{:.1f}k", x / 1e3);
  return fmt::format("{:.0f}", x);
}

std::string format_duration(double s) {
  if (!(s >= 0) || std::isinf(s)) return "?";
  int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string connector_line(const ConnectorStats& s) {
  auto mean = [](const std::vector<double>& v) {
    double a = 0;
    for (double x : v) a += x;
    return v.empty() ? 0.0 : a / double(v.size());
  };
  auto max = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
  return fmt::format(
      "connectors | amax composite fwd {:.3g} bwd {:.3g} | single max fwd {:.3g} bwd {:.3g} | H_res diag {:.3f} "
      "| row err {:.1e} col err {:.1e} | H_pre {:.3f} H_post {:.3f}",
      s.max_comp_fwd_gain, s.max_comp_bwd_gain, max(s.fwd_gain), max(s.bwd_gain), mean(s.h_res_diag),
      max(s.row_err), max(s.col_err), mean(s.h_pre), mean(s.h_post));
}

std::string moe_line(const std::vector<MoeStats>& layers) {
  double cv = 0, worst_cv = 0, ratio = 0, bmin = 0, bmax = 0, bal = 0;
  for (const MoeStats& l : layers) {
    cv += l.load_cv / double(layers.size());
    worst_cv = std::max(worst_cv, l.load_cv);
    ratio = std::max(ratio, l.load_min > 0 ? l.load_max / l.load_min : INFINITY);
    bmin = std::min(bmin, l.bias_min);
    bmax = std::max(bmax, l.bias_max);
    bal += l.balance_loss;
  }
  return fmt::format("moe | load cv {:.3f} (worst layer {:.3f}) | max/min load {:.2f}x | bias [{:.3g}, {:.3g}] | balance loss {:.2e}",
                     cv, worst_cv, ratio, bmin, bmax, bal);
}

std::string progress_line(const StepMetrics& m) {
  const int width = int(fmt::format("{}", m.total_steps).size());
  const double tps = m.tokens_per_s;
  const std::string rate = tps >= 1e6 ? fmt::format("{:.2f}M", tps / 1e6)
                           : tps >= 1e3 ? fmt::format("{:.1f}k", tps / 1e3)
                                        : fmt::format("{:.0f}", tps);
  const double eta = m.ms_per_step * 1e-3 * double(m.total_steps - m.step);
  const std::string mtp = m.mtp_loss ? fmt::format(" | mtp {:.4f}", *m.mtp_loss) : std::string();
  const std::string skipped = m.skipped_updates > 0 ? fmt::format(" | skipped {}", m.skipped_updates) : std::string();
  return fmt::format("step {:>{}}/{} | loss {:.4f}{} | gnorm {:.3f}{} | lr {:.2e} | {} tok/s | {:.0f} ms | MFU {:.1f}% | eta {}{}",
                     m.step, width, m.total_steps, m.loss, mtp, m.grad_norm, m.clip_scale < 1 ? "*" : "",
                     m.lr, rate, m.ms_per_step, 100 * m.mfu, format_duration(eta), skipped);
}

}  // namespace bk
