// The harness of the MPI test programs (run through mpirun by ctest): CHECK counts passes and
// failures per rank, finish() adds them over the ranks and gives the exit code. A plain main:
// gtest_main would not initialise MPI. An unexpected exception aborts the job (abort_job) so no
// rank is left waiting.
#pragma once
#include <cstdint>
#include <cstdio>
#include <vector>

#include "parallel/mpi_communicator.h"

namespace bk::mpi_testing {

inline int g_passed = 0, g_failed = 0, g_rank = 0;

// All ranks: the summed counts, printed by rank 0; 0 when nothing failed anywhere.
inline int finish(Communicator& world) {
  std::vector<int64_t> counts{g_passed, g_failed};
  world.all_reduce_sum(Tensor{counts.data(), DType::i64, Shape{2}});
  if (world.rank() == 0)
    std::printf("%ld passed, %ld failed (over %d ranks)\n", long(counts[0]), long(counts[1]), world.size());
  world.barrier();
  return counts[1] == 0 ? 0 : 1;
}

}  // namespace bk::mpi_testing

#define CHECK(cond)                                                                                  \
  do {                                                                                               \
    if (cond) {                                                                                      \
      ++::bk::mpi_testing::g_passed;                                                                 \
    } else {                                                                                         \
      ++::bk::mpi_testing::g_failed;                                                                 \
      std::fprintf(stderr, "rank %d: CHECK failed at %s:%d: %s\n", ::bk::mpi_testing::g_rank, __FILE__, \
                   __LINE__, #cond);                                                                 \
    }                                                                                                \
  } while (0)
