#include "parallel/process_grid.h"

#include "core/error.h"

namespace bk {
namespace {

// A watched world names its groups in timeout messages ("all_reduce_sum on communicator 'dp'").
std::unique_ptr<Communicator> split_group(const Communicator& world, int color, int key, const char* name) {
  return world.split_named(color, key, name);
}

void check_shape(const GridShape& g) {
  BK_CHECK(g.pp >= 1 && g.ep >= 1 && g.dp >= 1,
           "parallel: pp={}, ep={}, dp={} must all be at least 1", g.pp, g.ep, g.dp);
}

}  // namespace

GridCoord grid_coord(const GridShape& g, int r) {
  check_shape(g);
  BK_CHECK(r >= 0 && r < g.world(), "rank {} outside a grid of {}", r, g.world());
  return GridCoord{r / (g.ep * g.dp), r % g.ep, (r / g.ep) % g.dp};
}

int grid_rank(const GridShape& g, const GridCoord& c) { return c.ep + g.ep * (c.dp + g.dp * c.pp); }

std::vector<int> pp_group_members(const GridShape& g, int r) {
  GridCoord c = grid_coord(g, r);
  std::vector<int> m;
  for (int i = 0; i < g.pp; ++i) m.push_back(grid_rank(g, {i, c.ep, c.dp}));
  return m;
}

std::vector<int> ep_group_members(const GridShape& g, int r) {
  GridCoord c = grid_coord(g, r);
  std::vector<int> m;
  for (int i = 0; i < g.ep; ++i) m.push_back(grid_rank(g, {c.pp, i, c.dp}));
  return m;
}

std::vector<int> dp_group_members(const GridShape& g, int r) {
  GridCoord c = grid_coord(g, r);
  std::vector<int> m;
  for (int i = 0; i < g.dp; ++i) m.push_back(grid_rank(g, {c.pp, c.ep, i}));
  return m;
}

ProcessGrid::ProcessGrid(const Communicator& world, GridShape shape) : shape_(shape) {
  check_shape(shape);
  BK_CHECK(shape.world() == world.size(),
           "parallel: pp={} x ep={} x dp={} = {} processes, but the world has {}", shape.pp,
           shape.ep, shape.dp, shape.world(), world.size());
  coord_ = grid_coord(shape, world.rank());
  const GridShape& g = shape;
  const GridCoord& c = coord_;
  // Colors identify the group (the two other coordinates); keys order ranks inside it.
  pp_ = split_group(world, c.ep + g.ep * c.dp, c.pp, "pp");
  ep_ = split_group(world, c.dp + g.dp * c.pp, c.ep, "ep");
  dp_ = split_group(world, c.ep + g.ep * c.pp, c.dp, "dp");
  data_ = split_group(world, c.pp, c.ep + g.ep * c.dp, "data");
}

}  // namespace bk
