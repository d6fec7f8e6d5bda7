// Connector diagnostics over the tokens of one probed forward (docs/mhc.md, "Diagnostics").
// Per sublayer l: mean H_res diagonal, H_res row/column-sum error (mean over tokens of the
// largest |sum - 1|), mean H_pre and H_post, and the Amax gain magnitudes of the mHC paper:
// forward gain = max absolute row sum, backward gain = max absolute column sum, of H_res alone
// and of the composite H_res(last) ... H_res(l); all averaged over tokens.
#pragma once
#include <vector>

#include "model/connector_probe.h"

namespace bk {

struct ConnectorStats {
  std::vector<double> h_res_diag, row_err, col_err, h_pre, h_post;
  std::vector<double> fwd_gain, bwd_gain;            // single sublayer
  std::vector<double> comp_fwd_gain, comp_bwd_gain;  // composite from sublayer l to the last
  double max_comp_fwd_gain = 0, max_comp_bwd_gain = 0;
  size_t size() const { return fwd_gain.size(); }
};

ConnectorStats connector_stats(const std::vector<const ConnectorProbe*>& connectors);

}  // namespace bk
