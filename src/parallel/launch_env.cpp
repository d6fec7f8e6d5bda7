#include "parallel/launch_env.h"

#include <cstdlib>
#include <optional>
#include <vector>

#include "core/error.h"

namespace bk {
namespace {

std::optional<int> read_int(const GetEnv& get, const char* name) {
  const char* v = get(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  BK_CHECK(end && *end == '\0' && x >= 0 && x < (1L << 30), "environment variable {}='{}' is not a rank/size",
           name, v);
  return int(x);
}

struct Source {
  const char* name;
  const char* rank;
  const char* size;
  std::vector<const char*> local;
};

}  // namespace

LaunchEnv read_launch_env(const GetEnv& getenv_fn) {
  GetEnv get = getenv_fn ? getenv_fn : GetEnv([](const char* n) { return std::getenv(n); });
  const Source sources[] = {
      {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", {"OMPI_COMM_WORLD_LOCAL_RANK"}},
      {"pmi", "PMI_RANK", "PMI_SIZE", {"MPI_LOCALRANKID", "PMI_LOCAL_RANK"}},
      {"slurm", "SLURM_PROCID", "SLURM_NTASKS", {"SLURM_LOCALID"}},
  };
  LaunchEnv out;
  bool found = false;
  for (const Source& s : sources) {
    auto rank = read_int(get, s.rank);
    if (!rank) continue;
    auto size = read_int(get, s.size);
    BK_CHECK(size.has_value(), "{} is set but {} is not", s.rank, s.size);
    BK_CHECK(*rank < *size, "{}={} is not below {}={}", s.rank, *rank, s.size, *size);
    std::optional<int> local;
    for (const char* l : s.local)
      if (!local) local = read_int(get, l);
    if (!found) {
      out = LaunchEnv{*rank, *size, local.value_or(0), s.name};
      found = true;
      continue;
    }
    // A second launcher's view (e.g. srun starting OpenMPI processes) must agree.
    BK_CHECK(*rank == out.rank && *size == out.world_size,
             "launch environment disagrees: {} says rank {} of {}, {} says rank {} of {}", out.source,
             out.rank, out.world_size, s.name, *rank, *size);
  }
  return out;
}

void check_launch_env(const LaunchEnv& env, int mpi_rank, int mpi_size) {
  if (env.source == "none") {
    BK_CHECK(mpi_size == 1,
             "no launcher rank in the environment (OMPI_COMM_WORLD_*, PMI_*, SLURM_*) but MPI "
             "reports {} processes",
             mpi_size);
    return;
  }
  BK_CHECK(env.rank == mpi_rank && env.world_size == mpi_size,
           "launch environment ({}) says rank {} of {}, but MPI_Comm_rank/size say rank {} of {}",
           env.source, env.rank, env.world_size, mpi_rank, mpi_size);
}

}  // namespace bk
