// Rank, world size and local rank as the launcher (mpirun, srun, a PMI launcher) announces them
// in the environment, read before or independently of MPI_Init (e.g. to pick the GPU).
#pragma once
#include <functional>
#include <string>

namespace bk {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string source = "none";  // "openmpi", "pmi", "slurm", or "none" (single process)
};

using GetEnv = std::function<const char*(const char*)>;

// Reads OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK, then PMI_RANK/PMI_SIZE (local rank from
// MPI_LOCALRANKID or PMI_LOCAL_RANK when present), then SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID.
// The first source with a rank wins; every other source present must agree with it (bk::Error
// naming both otherwise). Nothing set: a single process, rank 0 of 1.
LaunchEnv read_launch_env(const GetEnv& getenv_fn = nullptr);

// Throws bk::Error when the environment's rank/size disagree with MPI_Comm_rank/size.
void check_launch_env(const LaunchEnv& env, int mpi_rank, int mpi_size);

}  // namespace bk
