// MPI tests of the communicator, launch environment and process grid. Run by ctest through
// mpirun with 2 and 4 ranks (tests/parallel/CMakeLists.txt). A plain main: gtest_main would
// not initialise MPI. An unexpected exception aborts the job (abort_job) so no rank hangs.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "parallel/launch_env.h"
#include "mpi_testing.h"
#include "parallel/mpi_communicator.h"
#include "kernels/ops.h"
#include "parallel/expert_exchange.h"
#include "parallel/process_grid.h"

using namespace bk;

namespace {

using mpi_testing::g_rank;

template <typename T> Tensor tensor_of(std::vector<T>& v, Shape s) {
  Tensor t{v.data(), dtype_of<T>(), s};
  BK_CHECK(t.numel() == int64_t(v.size()), "test tensor shape");
  return t;
}
template <typename T> Tensor tensor_of(std::vector<T>& v) {
  return tensor_of(v, Shape{int64_t(v.size())});
}

template <typename T> bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// Per-rank contribution with values of very different magnitudes, so that the order of the
// additions changes the rounded result.
template <typename T> T value(int r, int64_t i) {
  if constexpr (std::is_floating_point_v<T>)
    return T(std::sin(double(r * 7919 + i)) * std::pow(10.0, double((r + i) % 9) - 4.0));
  else
    return T((r + 1) * 1000003 + i * 31 - 7 * r * r);
}

template <typename T> void check_all_reduce(Communicator& c, int64_t n) {
  const int P = c.size();
  std::vector<T> x(n), expect(n);
  for (int64_t i = 0; i < n; ++i) x[i] = value<T>(c.rank(), i);
  for (int64_t i = 0; i < n; ++i) {
    T acc = value<T>(0, i);
    for (int r = 1; r < P; ++r) acc += value<T>(r, i);
    expect[i] = acc;
  }
  c.all_reduce_sum(tensor_of(x));
  CHECK(same_bits(x, expect));
  // Identical bits on every rank.
  std::vector<T> all(n * P);
  c.all_gather(tensor_of(all), tensor_of(x));
  bool same = true;
  for (int r = 0; r < P; ++r)
    same = same && (n == 0 || std::memcmp(all.data() + r * n, all.data(), n * sizeof(T)) == 0);
  CHECK(same);
}

template <typename T> void check_reduce_scatter(Communicator& c, int64_t chunk) {
  const int P = c.size();
  std::vector<T> in(chunk * P), full(chunk * P), out(chunk), gathered(chunk * P);
  for (int64_t i = 0; i < chunk * P; ++i) in[i] = full[i] = value<T>(c.rank(), i);
  c.all_reduce_sum(tensor_of(full));
  c.reduce_scatter_sum(tensor_of(out, Shape{chunk, 1}), tensor_of(in, Shape{P * chunk, 1}));
  c.all_gather(tensor_of(gathered), tensor_of(out));
  CHECK(same_bits(gathered, full));
}

void check_all_to_all_v(Communicator& c) {
  const int P = c.size(), me = c.rank();
  const int64_t W = 3;
  auto rows = [](int src, int dst) { return int64_t((src + 2 * dst) % 3); };  // zero for some pairs
  auto cell = [](int src, int dst, int64_t j, int64_t k) {
    return float(src * 1000000 + dst * 10000 + j * 10 + k);
  };
  std::vector<int64_t> send_rows(P), recv_rows(P);
  int64_t nsend = 0, nrecv = 0;
  for (int d = 0; d < P; ++d) nsend += send_rows[d] = rows(me, d);
  for (int s = 0; s < P; ++s) nrecv += recv_rows[s] = rows(s, me);
  std::vector<float> in, out(nrecv * W, -1.f), expect;
  for (int d = 0; d < P; ++d)
    for (int64_t j = 0; j < send_rows[d]; ++j)
      for (int64_t k = 0; k < W; ++k) in.push_back(cell(me, d, j, k));
  for (int s = 0; s < P; ++s)
    for (int64_t j = 0; j < recv_rows[s]; ++j)
      for (int64_t k = 0; k < W; ++k) expect.push_back(cell(s, me, j, k));
  c.all_to_all_v(tensor_of(out, Shape{nrecv, W}), recv_rows, tensor_of(in, Shape{nsend, W}), send_rows);
  CHECK(same_bits(out, expect));
  // Mismatched counts are an error before any communication.
  bool threw = false;
  try {
    std::vector<int64_t> bad = send_rows;
    bad[0] += 1;
    c.all_to_all_v(tensor_of(out, Shape{nrecv, W}), recv_rows, tensor_of(in, Shape{nsend, W}), bad);
  } catch (const Error&) {
    threw = true;
  }
  CHECK(threw);
}

void check_ring(Communicator& c) {
  const int P = c.size(), me = c.rank();
  const int right = (me + 1) % P, left = (me + P - 1) % P;
  std::vector<int64_t> send(5), recv(5, -1);
  for (int i = 0; i < 5; ++i) send[i] = me * 100 + i;
  auto r = c.irecv(tensor_of(recv), left, 7);  // posted before the matching send
  auto s = c.isend(tensor_of(send), right, 7);
  c.barrier();
  s->wait();
  while (!r->test()) {
  }
  r->wait();  // no-op after test() returned true
  bool ok = true;
  for (int i = 0; i < 5; ++i) ok = ok && recv[i] == left * 100 + i;
  CHECK(ok);
}

void check_broadcast(Communicator& c) {
  const int root = c.size() - 1;
  std::vector<double> x(17);
  for (int i = 0; i < 17; ++i) x[i] = c.rank() == root ? 0.1 * i : -1.0;
  c.broadcast(tensor_of(x), root);
  bool ok = true;
  for (int i = 0; i < 17; ++i) ok = ok && x[i] == 0.1 * i;
  CHECK(ok);
}

std::vector<int> members_of(Communicator& group, int world_rank) {
  std::vector<int32_t> me{world_rank}, all(group.size());
  group.all_gather(tensor_of(all), tensor_of(me));
  return std::vector<int>(all.begin(), all.end());
}

void check_grid(Communicator& world, GridShape g) {
  ProcessGrid grid(world, g);
  const int r = world.rank();
  GridCoord c = grid.coord();
  CHECK(grid_rank(g, c) == r);
  CHECK(c.ep == r % g.ep && c.dp == (r / g.ep) % g.dp && c.pp == r / (g.ep * g.dp));
  CHECK(grid.pp_group().size() == g.pp && grid.pp_group().rank() == c.pp);
  CHECK(grid.ep_group().size() == g.ep && grid.ep_group().rank() == c.ep);
  CHECK(grid.dp_group().size() == g.dp && grid.dp_group().rank() == c.dp);
  CHECK(members_of(grid.pp_group(), r) == pp_group_members(g, r));
  CHECK(members_of(grid.ep_group(), r) == ep_group_members(g, r));
  CHECK(members_of(grid.dp_group(), r) == dp_group_members(g, r));
  // The groups really communicate: a deterministic sum inside the dp group.
  std::vector<float> x{float(r)};
  grid.dp_group().all_reduce_sum(tensor_of(x));
  float expect = 0;
  for (int m : dp_group_members(g, r)) expect += float(m);
  CHECK(x[0] == expect);
}

void check_layout_examples() {
  // (pp, ep, dp) = (2, 2, 2): ranks 0..7; ep fastest, then dp, then pp.
  GridShape g{2, 2, 2};
  CHECK(ep_group_members(g, 5) == (std::vector<int>{4, 5}));
  CHECK(dp_group_members(g, 5) == (std::vector<int>{5, 7}));
  CHECK(pp_group_members(g, 5) == (std::vector<int>{1, 5}));
  GridCoord c = grid_coord(g, 6);
  CHECK(c.pp == 1 && c.dp == 1 && c.ep == 0);
}

void check_launch_env_parsing(Communicator& world) {
  auto fake = [](std::map<std::string, std::string> m) {
    return [m = std::move(m)](const char* n) -> const char* {
      auto it = m.find(n);
      return it == m.end() ? nullptr : it->second.c_str();
    };
  };
  LaunchEnv e = read_launch_env(fake({{"OMPI_COMM_WORLD_RANK", "3"},
                                      {"OMPI_COMM_WORLD_SIZE", "8"},
                                      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}}));
  CHECK(e.rank == 3 && e.world_size == 8 && e.local_rank == 1 && e.source == "openmpi");
  e = read_launch_env(fake({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "6"}, {"SLURM_LOCALID", "2"}}));
  CHECK(e.rank == 5 && e.world_size == 6 && e.local_rank == 2 && e.source == "slurm");
  e = read_launch_env(fake({{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}}));
  CHECK(e.rank == 1 && e.world_size == 2 && e.local_rank == 0 && e.source == "pmi");
  e = read_launch_env(fake({}));
  CHECK(e.rank == 0 && e.world_size == 1 && e.source == "none");
  bool threw = false;
  try {
    read_launch_env(fake({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                          {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}));
  } catch (const Error&) {
    threw = true;
  }
  CHECK(threw);
  threw = false;
  try {
    check_launch_env(LaunchEnv{0, 3, 0, "openmpi"}, 0, 2);
  } catch (const Error& err) {
    threw = std::string(err.what()).find("MPI_Comm_rank/size") != std::string::npos;
  }
  CHECK(threw);
  // The real environment under mpirun agrees with MPI.
  LaunchEnv real = read_launch_env();
  CHECK(real.source == "openmpi");
  check_launch_env(real, world.rank(), world.size());
}

// Expert-parallel dispatch: every (token, slot) row reaches the owner of its expert exactly once,
// grouped by local expert with sources in rank order (token order inside a source), and comes
// back to its own position. Loads are uneven: rank r routes 4 + 5r tokens; rank 0 sends only to
// its own experts (so it sends nothing to the others), and global expert 1 receives nothing.
void check_expert_exchange(Communicator& world) {
  const int P = world.size(), me = world.rank();
  const int64_t per = 3, E = per * P, K = 2, C = 3, N = 4 + 5 * me;
  std::vector<int32_t> idx(size_t(N * K));
  for (int64_t n = 0; n < N; ++n) {
    const int64_t range = me == 0 ? per : E;  // rank 0: only its own experts 0..per-1
    int64_t e0 = (n * 7 + me) % range;
    if (e0 == 1) e0 = 0;
    int64_t e1 = (e0 + 1 + n % 2) % range;
    if (e1 == 1) e1 = 2;
    if (e1 == e0) e1 = e0 == 0 ? 2 : 0;
    idx[n * K] = int32_t(e0);
    idx[n * K + 1] = int32_t(e1);
  }
  std::vector<int32_t> rows(size_t(N * K)), offsets(size_t(E + 1));
  ops::moe_plan(tensor_of(rows, {N, K}), tensor_of(offsets), tensor_of(idx, {N, K}));
  // Row (n, j) carries (source rank, token, expert) through the exchange.
  std::vector<float> perm(size_t(N * K * C));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < K; ++j) {
      float* r = &perm[size_t(rows[n * K + j] * C)];
      r[0] = float(me), r[1] = float(n), r[2] = float(idx[n * K + j]);
    }
  ExpertExchange xc(world, E, offsets.data());
  std::vector<float> local(size_t(xc.local_rows() * C));
  xc.dispatch(tensor_of(local, {xc.local_rows(), C}), tensor_of(perm, {N * K, C}));

  // Expected arrivals: per expert, all ranks' loads (summed in any order: integers).
  std::vector<int64_t> load(static_cast<size_t>(E), 0);
  for (int64_t e = 0; e < E; ++e) load[e] = offsets[e + 1] - offsets[e];
  world.all_reduce_sum(tensor_of(load));
  CHECK(load[1] == 0);
  const ExpertRange mine = owned_experts(E, me, P);
  for (int64_t i = 0; i < per; ++i) {
    const int64_t e = mine.first + i;
    CHECK(xc.local_end(int(i)) - xc.local_begin(int(i)) == load[e]);
    float last_src = -1, last_tok = -1;
    for (int64_t r = xc.local_begin(int(i)); r < xc.local_end(int(i)); ++r) {
      const float* x = &local[size_t(r * C)];
      CHECK(x[2] == float(e));  // the row's expert is this local expert
      CHECK(x[0] > last_src || (x[0] == last_src && x[1] > last_tok));  // rank, then token order
      last_src = x[0], last_tok = x[1];
    }
  }
  if (me == 0) CHECK(xc.send_rows()[size_t(P - 1)] == 0);
  CHECK(xc.recv_rows()[0] == (me == 0 ? offsets[per] : 0));

  // Each owner transforms its rows by its expert id; the results come back to their slots.
  for (int64_t r = 0; r < xc.local_rows(); ++r)
    for (int64_t c = 0; c < C; ++c) local[size_t(r * C + c)] *= local[size_t(r * C + 2)] + 1;
  std::vector<float> back(size_t(N * K * C), -1.f);
  xc.combine(tensor_of(back, {N * K, C}), tensor_of(local, {xc.local_rows(), C}));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < K; ++j) {
      const float* r = &back[size_t(rows[n * K + j] * C)];
      const float f = float(idx[n * K + j] + 1);
      CHECK(r[0] == me * f && r[1] == n * f && r[2] == idx[n * K + j] * f);
    }
}

void run_all(MpiRuntime& rt, Communicator& world) {
  check_expert_exchange(world);
  CHECK(world.size() >= 2);
  check_launch_env_parsing(world);
  for (int64_t n : {0, 1, 3, 1003, 65537}) {
    check_all_reduce<float>(world, n);
    check_all_reduce<double>(world, n);
    check_all_reduce<int32_t>(world, n);
    check_all_reduce<int64_t>(world, n);
  }
  // The test data is order-sensitive: a reversed order gives different f32 bits.
  {
    bool differs = false;
    for (int64_t i = 0; i < 1003 && !differs; ++i) {
      float fwd = value<float>(0, i), bwd = value<float>(world.size() - 1, i);
      for (int r = 1; r < world.size(); ++r) fwd += value<float>(r, i);
      for (int r = world.size() - 2; r >= 0; --r) bwd += value<float>(r, i);
      differs = std::memcmp(&fwd, &bwd, 4) != 0;
    }
    if (world.size() > 2) CHECK(differs);
  }
  check_reduce_scatter<float>(world, 1);
  check_reduce_scatter<float>(world, 777);
  check_reduce_scatter<int64_t>(world, 10);
  check_all_to_all_v(world);
  check_ring(world);
  check_broadcast(world);
  check_layout_examples();

  std::vector<GridShape> shapes;
  if (world.size() == 2) shapes = {{1, 1, 2}, {1, 2, 1}, {2, 1, 1}};
  if (world.size() == 4) shapes = {{1, 2, 2}, {2, 1, 2}, {2, 2, 1}, {1, 4, 1}, {1, 1, 4}};
  CHECK(!shapes.empty());
  for (GridShape g : shapes) check_grid(world, g);
  bool threw = false;
  try {
    ProcessGrid bad(world, GridShape{world.size(), 2, 1});
  } catch (const Error& err) {
    threw = std::string(err.what()).find("but the world has") != std::string::npos;
  }
  CHECK(threw);
  // A split world communicator is usable independently of the original.
  auto halves = world.split(world.rank() % 2, world.rank());
  CHECK(halves->size() == world.size() / 2 && halves->rank() == world.rank() / 2);
  if (world.rank() == 0)
    std::printf("MPI thread level provided: %d (MULTIPLE=%d)\n", rt.thread_level_provided(),
                MPI_THREAD_MULTIPLE);
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime rt(&argc, &argv);
  auto world = rt.world();
  g_rank = world->rank();
  try {
    run_all(rt, *world);
  } catch (const std::exception& e) {
    abort_job(std::string("unexpected exception: ") + e.what());
  }
  return mpi_testing::finish(*world);
}
