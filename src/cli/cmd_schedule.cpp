// birkhoff schedule: prints a pipeline schedule's per-rank action lists (parallel/schedule.h),
// simulates one step with given op costs (parallel/schedule_sim.h) and optionally writes a Chrome
// trace. The lists go to stdout, one line per rank and nothing else, so they can be diffed or
// redirected as they are; the simulation report goes to stderr (docs/dualpipe.md).
#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>

#include "cli/commands.h"
#include "core/error.h"
#include "parallel/schedule.h"
#include "parallel/schedule_sim.h"

namespace bk {

namespace {

const char* kScheduleUsage =
    "usage: birkhoff schedule --kind 1f1b|dualpipe|dualpipev --pp P --microbatches N [--trace FILE]\n"
    "                         [--cost-f F] [--cost-b B] [--cost-w W] [--cost-fb FB] [--latency L]\n"
    "  prints one line per pipeline rank to stdout, `rank<r>: OP OP ...`, the actions of one training\n"
    "  step in order: F<d>.<m> forward, B<d>.<m> full backward, b<d>.<m> input gradient only,\n"
    "  W<d>.<m> its deferred weight gradient, [F<d>.<m>&B<d>.<m>] an overlapped forward/backward pair\n"
    "  (d: the direction for dualpipe, else the stage; m: the micro-batch within it). Then simulates\n"
    "  the step and reports makespan and bubble per rank next to the published formula on stderr.\n"
    "  --kind           1f1b (any P, N), dualpipe (P even, N even, N >= 2P), dualpipev (N >= 2P;\n"
    "                   2P stages on P ranks)\n"
    "  --pp             pipeline ranks P >= 1\n"
    "  --microbatches   micro-batches per step N >= 1 (over both directions for dualpipe)\n"
    "  --trace          write a Chrome trace (chrome://tracing, ui.perfetto.dev) of the simulated step\n"
    "  --cost-f, --cost-b, --cost-w   forward, full backward, and weight-gradient costs (default 1, 2, 1;\n"
    "                   an input-gradient-only b costs B - W, so W < B)\n"
    "  --cost-fb        cost of an overlapped F&B pair (default F + B)\n"
    "  --latency        per-message latency between ranks (default 0)";

int parse_int(const ParsedArgs& a, const std::string& option) {
  const std::string v = a.value(option);
  BK_CHECK(!v.empty(), "{} is required\n{}", option, kScheduleUsage);
  int out = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  BK_CHECK(ec == std::errc() && end == v.data() + v.size() && out >= 1, "{}: expected an integer >= 1, got '{}'\n{}",
           option, v, kScheduleUsage);
  return out;
}

double parse_cost(const ParsedArgs& a, const std::string& option, double fallback) {
  const std::string v = a.value(option);
  if (v.empty()) return fallback;
  char* end = nullptr;
  errno = 0;
  const double out = std::strtod(v.c_str(), &end);
  BK_CHECK(errno == 0 && end == v.c_str() + v.size(), "{}: expected a number, got '{}'\n{}", option, v,
           kScheduleUsage);
  return out;
}

}  // namespace

int cmd_schedule(const Args& args) {
  ParsedArgs a = parse_args(args, {}, kScheduleUsage,
                            {"--kind", "--pp", "--microbatches", "--trace", "--cost-f", "--cost-b", "--cost-w",
                             "--cost-fb", "--latency"});
  if (a.help) return fmt::print("{}\n", kScheduleUsage), 0;
  BK_CHECK(a.positional.empty(), "schedule takes no positional arguments, got '{}'\n{}", a.positional[0],
           kScheduleUsage);
  BK_CHECK(a.sets.empty(), "schedule takes no --set overrides\n{}", kScheduleUsage);
  const std::string kind_name = a.value("--kind");
  BK_CHECK(!kind_name.empty(), "--kind is required: 1f1b, dualpipe or dualpipev\n{}", kScheduleUsage);
  BK_CHECK(kind_name == "1f1b" || kind_name == "dualpipe" || kind_name == "dualpipev",
           "--kind: expected 1f1b, dualpipe or dualpipev, got '{}'\n{}", kind_name, kScheduleUsage);
  const ScheduleKind kind = parse_schedule_kind(kind_name);
  const int pp = parse_int(a, "--pp");
  const int n = parse_int(a, "--microbatches");
  OpCosts costs;
  costs.f = parse_cost(a, "--cost-f", 1.0);
  costs.b = parse_cost(a, "--cost-b", 2.0);
  costs.w = parse_cost(a, "--cost-w", 1.0);
  costs.fb = parse_cost(a, "--cost-fb", -1.0);
  BK_CHECK(a.value("--cost-fb").empty() || costs.fb > 0, "--cost-fb: the pair cost must be > 0, got {}", costs.fb);
  costs.latency = parse_cost(a, "--latency", 0.0);
  validate_costs(costs);

  const Schedule s = make_schedule(kind, pp, n);
  const std::vector<std::string> problems = check_schedule(s);
  BK_CHECK(problems.empty(), "internal: the {} schedule is inconsistent: {}", kind_name, problems[0]);
  const SimResult sim = simulate(s, costs);
  if (sim.deadlock) {
    for (int r = 0; r < s.pp; ++r) fmt::print("{}\n", format_rank(s, r));
    BK_FAIL("internal: the {} schedule deadlocks in simulation:\n{}", kind_name, sim.deadlock_report(s));
  }
  // The trace first, so that a bad path fails before anything is printed.
  const std::string trace = a.value("--trace");
  if (!trace.empty()) write_chrome_trace(trace, s, sim, costs);

  for (int r = 0; r < s.pp; ++r) fmt::print("{}\n", format_rank(s, r));
  std::fflush(stdout);
  const double formula = analytical_bubble(s, costs);
  fmt::print(stderr, "\nsimulated {} pp={} N={}{}: F={:g} B={:g} W={:g} b=B-W={:g} F&B={:g} latency={:g}\n",
             kind_name, pp, n, kind == ScheduleKind::DualPipeV ? fmt::format(" ({} stages)", s.num_stages) : "",
             costs.f, costs.b, costs.w, costs.input_grad(), costs.pair(), costs.latency);
  fmt::print(stderr, "makespan {:g}; bubble = makespan - busy; formula {} = {:g}\n", sim.makespan,
             analytical_formula(kind), formula);
  fmt::print(stderr, "  {:>5} {:>10} {:>10} {:>9} {:>17}\n", "rank", "busy", "bubble", "fraction", "formula fraction");
  for (int r = 0; r < s.pp; ++r)
    fmt::print(stderr, "  {:>5} {:>10.4g} {:>10.4g} {:>9.4f} {:>17.4f}\n", r, sim.busy[r], sim.bubble[r],
               sim.bubble_fraction(r), sim.busy[r] + formula > 0 ? formula / (sim.busy[r] + formula) : 0.0);
  if (!trace.empty()) fmt::print(stderr, "trace: {}\n", trace);
  return 0;
}

}  // namespace bk
