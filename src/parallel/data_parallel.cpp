#include "parallel/data_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/ops.h"

namespace bk {

struct DataParallelOptimizer::Group {
  Communicator* comm = nullptr;
  ParamList params;
  std::vector<int> owner;        // owner rank of each parameter
  std::vector<int64_t> offset;   // of each parameter in the flat buffer
  int64_t segment = 0;           // elements per rank in the flat buffer
  Buffer flat;                   // [size * segment]; none with one rank (nothing to exchange)

  Group(Communicator& c, ParamList ps) : comm(&c), params(std::move(ps)) {
    const int P = c.size();
    int64_t total = 0;
    for (Param* p : params) total += p->value.numel();
    // Contiguous runs balanced by size: a parameter goes to the rank whose share its first
    // element falls in.
    std::vector<int64_t> used(size_t(P), 0);
    int64_t before = 0;
    for (Param* p : params) {
      const int r = total > 0 ? int(std::min<int64_t>(P - 1, before * P / total)) : 0;
      owner.push_back(r);
      before += p->value.numel();
      used[r] += p->value.numel();
    }
    segment = std::max<int64_t>(1, *std::max_element(used.begin(), used.end()));
    std::vector<int64_t> next(size_t(P), 0);
    for (size_t i = 0; i < params.size(); ++i) {
      offset.push_back(owner[i] * segment + next[owner[i]]);
      next[owner[i]] += params[i]->value.numel();
    }
    // Gradients and full-precision weights share the dtype (f32; f64 in checks) and device.
    const DType dt = params.empty() ? DType::f32 : params[0]->grad.dtype();
    const Device dev = params.empty() ? Device::cpu : params[0]->grad.device();
    if (P > 1) flat = Buffer({int64_t(P) * segment}, dt, dev);
  }

  bool mine(size_t i) const { return owner[i] == comm->rank(); }
  Tensor slot(size_t i) const {
    return flat.tensor().view({flat.numel()}).rows(offset[i], offset[i] + params[i]->value.numel());
  }
  Tensor my_segment() const {
    const int64_t r = comm->rank();
    return flat.tensor().view({flat.numel()}).rows(r * segment, (r + 1) * segment);
  }
  // Copies between each parameter's gradient or full-precision weights and its slot;
  // only_mine restricts to the owned run.
  enum class Field { grad, weights };
  static Tensor flat_view(Param& p, Field f) {
    return (f == Field::grad ? p.grad.tensor() : p.weights()).view({p.value.numel()});
  }
  void pack(Field f, bool only_mine) {
    for (size_t i = 0; i < params.size(); ++i)
      if (!only_mine || mine(i)) ops::copy(slot(i), flat_view(*params[i], f));
  }
  void unpack(Field f, bool only_mine) {
    for (size_t i = 0; i < params.size(); ++i) {
      if (only_mine && !mine(i)) continue;
      ops::copy(flat_view(*params[i], f), slot(i));
      if (f == Field::weights) params[i]->refresh();
    }
  }
  // Sum of squared gradients of each rank's run, the runs added in rank order.
  double sum_squares(bool zero1) const {
    const int P = comm->size();
    Buffer partial({P}, DType::f64);
    double* pp = partial.ptr<double>();
    std::vector<Tensor> grads;
    std::vector<int> owners;
    for (size_t i = 0; i < params.size(); ++i)
      if (!zero1 || mine(i)) {
        grads.push_back(params[i]->grad);
        owners.push_back(owner[i]);
      }
    const std::vector<double> sums = ops::sum_squares_many(grads);  // parameter order, as before
    for (size_t k = 0; k < sums.size(); ++k) pp[owners[k]] += sums[k];
    if (zero1) {
      Buffer all({P}, DType::f64);
      comm->all_gather(all, partial.tensor().rows(comm->rank(), comm->rank() + 1));
      std::memcpy(pp, all.ptr<double>(), sizeof(double) * size_t(P));
    }
    double s = 0;
    for (int r = 0; r < P; ++r) s += pp[r];
    return s;
  }
};

DataParallelOptimizer::DataParallelOptimizer(const OptimizerConfig& cfg, ParamList params, Communicator& data,
                                             Communicator& dp, Communicator& ep, bool zero1, PipelineShare pipeline)
    : ep_(&ep), zero1_(zero1), pipeline_(pipeline) {
  ParamList rep, exp;
  for (Param* p : params) (p->expert ? exp : rep).push_back(p);
  replicated_ = std::make_unique<Group>(data, rep);
  expert_ = std::make_unique<Group>(dp, exp);
  ParamList updated;
  for (Group* g : {replicated_.get(), expert_.get()})
    for (size_t i = 0; i < g->params.size(); ++i)
      if (!zero1 || g->mine(i)) updated.push_back(g->params[i]);
  adam_ = std::make_unique<AdamW>(cfg, updated);
}

DataParallelOptimizer::~DataParallelOptimizer() = default;

void DataParallelOptimizer::zero_grad() {
  for (Group* g : {replicated_.get(), expert_.get()})
    for (Param* p : g->params) p->grad.zero();
}

void DataParallelOptimizer::reduce_gradients() {
  for (Group* g : {replicated_.get(), expert_.get()}) {
    if (g->comm->size() == 1) continue;  // the gradients are already the sums
    g->pack(Group::Field::grad, false);
    if (zero1_) {
      Buffer mine({g->segment}, g->flat.dtype(), g->flat.device());
      g->comm->reduce_scatter_sum(mine, g->flat);
      ops::copy(g->my_segment(), mine);
      g->unpack(Group::Field::grad, true);
    } else {
      g->comm->all_reduce_sum(g->flat);
      g->unpack(Group::Field::grad, false);
    }
  }
}

double DataParallelOptimizer::grad_norm() {
  const double rep = replicated_->sum_squares(zero1_);
  Buffer e({1}, DType::f64);
  e.ptr<double>()[0] = expert_->sum_squares(zero1_);
  ep_->all_reduce_sum(e);  // each ep rank holds other experts
  Buffer total({1}, DType::f64);
  total.ptr<double>()[0] = rep + e.ptr<double>()[0];
  if (pipeline_.pipe) {  // each pipeline rank holds other stages (DualPipe: each stage twice)
    pipeline_.pipe->all_reduce_sum(total);
    total.ptr<double>()[0] /= pipeline_.stage_copies;
  }
  return std::sqrt(total.ptr<double>()[0]);
}

void DataParallelOptimizer::step(double lr, double clip_scale) {
  adam_->step(lr, clip_scale);
  if (!zero1_) return;
  for (Group* g : {replicated_.get(), expert_.get()}) {
    if (g->comm->size() == 1) continue;
    g->pack(Group::Field::weights, true);
    Buffer mine({g->segment}, g->flat.dtype(), g->flat.device());
    ops::copy(mine, g->my_segment());
    g->comm->all_gather(g->flat, mine);
    g->unpack(Group::Field::weights, false);
  }
}

int64_t DataParallelOptimizer::steps_taken() const { return adam_->steps_taken(); }
void DataParallelOptimizer::set_steps_taken(int64_t t) { adam_->set_steps_taken(t); }

std::vector<NamedTensor> DataParallelOptimizer::params_to_save() const {
  std::vector<NamedTensor> out;
  if (!pipeline_.saves) return out;
  for (const Group* g : {replicated_.get(), expert_.get()})
    for (size_t i = 0; i < g->params.size(); ++i)
      if (g->mine(i)) out.push_back({g->params[i]->name, g->params[i]->weights()});
  return out;
}

std::vector<NamedTensor> DataParallelOptimizer::optimizer_state_held() const {
  std::vector<NamedTensor> out;
  for (auto& [name, t] : adam_->state_tensors()) out.push_back({name, t});
  return out;
}

std::vector<NamedTensor> DataParallelOptimizer::optimizer_state_to_save() const {
  if (!pipeline_.saves) return {};
  if (zero1_) return optimizer_state_held();
  // Plain dp: every rank holds every moment; the owner of a parameter saves its moments.
  std::vector<std::string> owned;
  for (const Group* g : {replicated_.get(), expert_.get()})
    for (size_t i = 0; i < g->params.size(); ++i)
      if (g->mine(i)) owned.push_back(g->params[i]->name);
  std::sort(owned.begin(), owned.end());
  std::vector<NamedTensor> out;
  for (NamedTensor& t : optimizer_state_held()) {
    const std::string param = t.name.substr(0, t.name.rfind('.'));  // "<param>.exp_avg[_sq]"
    if (std::binary_search(owned.begin(), owned.end(), param)) out.push_back(t);
  }
  return out;
}

}  // namespace bk
