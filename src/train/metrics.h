// Per-step metrics: one JSON object per step in RUN_DIR/metrics.jsonl (keys in
// docs/metrics.md) and the console progress line every log interval.
#pragma once
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

#include "model/connector_stats.h"
#include "model/moe.h"

namespace bk {

struct StepMetrics {
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0;          // mean per-token training loss of the step
  double grad_norm = 0;     // before clipping
  double clip_scale = 1;    // gradient scale applied (1 = not clipped)
  double lr = 0;
  int64_t tokens = 0;       // tokens seen so far (all ranks)
  double tokens_per_s = 0;
  double ms_per_step = 0;
  double mfu = 0;           // model FLOPs utilisation, fraction of the peak
  double elapsed_s = 0;     // since training started
  std::optional<double> val_loss;
  std::optional<ConnectorStats> connectors;  // hc/mhc, on logged steps with validation data
  std::vector<MoeStats> moe;                 // one per MoE layer, every step
  std::optional<double> mtp_loss;            // mean MTP loss of the step (model.mtp.depth > 0)
};

class MetricsLog {
 public:
  // path empty: no JSONL file.
  explicit MetricsLog(const std::string& jsonl_path);
  void write(const StepMetrics& m);

 private:
  std::ofstream out_;
};

// "step   10/300 | loss 5.1234 | gnorm 0.812 | lr 1.00e-03 | 12.3k tok/s | 165 ms | MFU 11.2% | eta 1m05s"
std::string progress_line(const StepMetrics& m);
std::string format_duration(double seconds);
// 1234567 -> "1.23M"
std::string human(double x);
// "connectors | amax composite fwd 1.02 bwd 1.05 (max over l) | H_res diag 0.90 | ..."
std::string connector_line(const ConnectorStats& s);
// "moe | load cv 0.12 (worst layer 0.31) | max/min load 1.9x | bias [-0.02, 0.03] | balance loss 1.0e-4"
std::string moe_line(const std::vector<MoeStats>& layers);

}  // namespace bk
