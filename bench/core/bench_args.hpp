// bench/core/bench_args.hpp: what bench_savina and bench_realwork share: the
// command line both take (--runs N, --case A,B, --quick, --threads N, plus a
// program's own options), the case selection, and the median of a run's
// timings.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace bench {

struct Args {
  int runs = 5;
  bool quick = false;
  std::size_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::string> cases;  // empty: all

  bool selected(const std::string& name) const {
    return cases.empty() || std::find(cases.begin(), cases.end(), name) != cases.end();
  }
};

// Parses the common options; `extra(flag, value)` gets any other flag (it
// calls `value()` to take the next argument) and returns false if it does
// not know it. `usage(why)` does not return.
inline Args parse_args(
    int argc, char** argv, void (*usage)(const char*),
    const std::function<bool(std::string_view, const std::function<std::string()>&)>& extra = {}) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    std::function<std::string()> value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (flag == "--runs") {
      a.runs = std::atoi(value().c_str());
      if (a.runs < 1) usage("--runs must be >= 1");
    } else if (flag == "--case") {
      std::string only = value();
      for (std::size_t at = 0; at <= only.size();) {
        std::size_t comma = std::min(only.find(',', at), only.size());
        a.cases.push_back(only.substr(at, comma - at));
        at = comma + 1;
      }
    } else if (flag == "--quick") {
      a.quick = true;
    } else if (flag == "--threads") {
      int t = std::atoi(value().c_str());
      if (t < 1) usage("--threads must be >= 1");
      a.threads = static_cast<std::size_t>(t);
    } else if (flag == "--help" || flag == "-h") {
      usage("help");
    } else if (!extra || !extra(flag, value)) {
      usage("unknown argument");
    }
  }
  return a;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace bench
