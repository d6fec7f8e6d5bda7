// Failure test: rank 1 throws mid-way and calls abort_job while rank 0 waits in a collective.
// The job must end with a non-zero exit code and "rank 1:" in the output, not hang.
#include <cstdio>

#include "parallel/mpi_communicator.h"

int main(int argc, char** argv) {
  bk::MpiRuntime rt(&argc, &argv);
  auto world = rt.world();
  try {
    world->barrier();
    if (world->rank() == 1) BK_FAIL("injected failure in the middle of a step");
    world->barrier();  // rank 0 blocks here: only the abort can end it
  } catch (const std::exception& e) {
    bk::abort_job(e.what());
  }
  std::printf("rank %d: not aborted\n", world->rank());
  return 0;
}
