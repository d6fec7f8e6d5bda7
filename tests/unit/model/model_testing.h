// Helpers shared by the model tests.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

namespace bk::testing {

// ||a - b|| / ||b|| over all elements (in double).
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace bk::testing
