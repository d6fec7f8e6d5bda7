// ProcessGrid: the pp x ep x dp layout of the world's ranks and the communicators of its groups.
//
// Rank layout: ep varies fastest, then dp, then pp:
//     world_rank = ep_rank + ep * (dp_rank + dp * pp_rank)
// Launchers place consecutive ranks on the same node, so with ep * dp <= GPUs per node the
// expert all-to-all (the most traffic, every layer) and the data-parallel gradient reductions
// stay inside a node (NVLink); only pipeline sends, point to point and small, cross nodes.
#pragma once
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace bk {

struct GridShape {
  int pp = 1, ep = 1, dp = 1;
  int world() const { return pp * ep * dp; }
};

struct GridCoord {
  int pp = 0, ep = 0, dp = 0;
};

// Pure layout arithmetic, no communication.
GridCoord grid_coord(const GridShape& g, int world_rank);
int grid_rank(const GridShape& g, const GridCoord& c);
// World ranks in the same pipeline / expert / data group as world_rank, in group-rank order.
std::vector<int> pp_group_members(const GridShape& g, int world_rank);
std::vector<int> ep_group_members(const GridShape& g, int world_rank);
std::vector<int> dp_group_members(const GridShape& g, int world_rank);

class ProcessGrid {
 public:
  // Collective over `world`: splits it into the three groups. bk::Error when pp*ep*dp differs
  // from world.size() (the same on every rank, so no rank is left waiting).
  ProcessGrid(const Communicator& world, GridShape shape);

  const GridShape& shape() const { return shape_; }
  const GridCoord& coord() const { return coord_; }
  int pp_rank() const { return coord_.pp; }
  int ep_rank() const { return coord_.ep; }
  int dp_rank() const { return coord_.dp; }

  // Group communicators; the rank in each equals the matching coordinate.
  Communicator& pp_group() const { return *pp_; }  // same (ep, dp): the pipeline stages
  Communicator& ep_group() const { return *ep_; }  // same (pp, dp): the expert all-to-all
  Communicator& dp_group() const { return *dp_; }  // same (pp, ep): gradient reductions
  // Same pp: the ep x dp ranks that each take a slice of the global batch and hold replicas of
  // every non-expert parameter. Its rank is data_rank() (ep fastest, as in the world).
  Communicator& data_group() const { return *data_; }
  int data_rank() const { return coord_.ep + shape_.ep * coord_.dp; }
  int data_size() const { return shape_.ep * shape_.dp; }

 private:
  GridShape shape_;
  GridCoord coord_;
  std::unique_ptr<Communicator> pp_, ep_, dp_, data_;
};

}  // namespace bk
