// What a connector exposes for diagnostics: its coefficients for the tokens of the last
// forward that had mb.probe set (h_pre [N,n], h_post [N,n], h_res [N,n,n]).
#pragma once
#include "core/buffer.h"

namespace bk {

struct ConnectorCoefficients {
  int64_t n = 1;
  Buffer h_pre, h_post, h_res;
};

class ConnectorProbe {
 public:
  virtual ~ConnectorProbe() = default;
  virtual const ConnectorCoefficients& probed() const = 0;
};

}  // namespace bk
