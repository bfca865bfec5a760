// RLE-native reduction; see reduce_rle.hpp for the design.
//
// Like the other kernels this one trusts the shapes and offsets the bindings
// checked, but re-checks every run against the image size before using it,
// because the arrays may change while the GIL is released.
#include "reduce_rle.hpp"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "threads.hpp"

namespace sat {

namespace {

constexpr double kInf = HUGE_VAL;
constexpr int64_t B = kRleBlockRows;

struct Acc {
  double pos = 0.0, neg = 0.0, sq = 0.0, min = kInf, max = -kInf;
  int64_t count = 0;
};

// A double-double running sum (Knuth's TwoSum), so that differences of the
// column-prefix sums stay accurate relative to the columns they span.
struct Compensated {
  double hi = 0.0, lo = 0.0;
  void add(double v) {
    const double s = hi + v;
    const double bp = s - hi;
    const double err = (hi - (s - bp)) + (v - bp);
    hi = s;
    lo += err;
  }
};

inline double diff(const Compensated& b, const Compensated& a) { return (b.hi - a.hi) + (b.lo - a.lo); }

// The per-image summary, reused across the images a thread processes.
struct Summary {
  int64_t h = 0, w = 0, nb = 0;  // rows, columns, blocks per column
  bool has_nonfinite = false;
  // (nb + 1, w): column prefix sums at block boundaries (row min(k*B, h)).
  std::vector<double> ppos, pneg, psq;
  std::vector<int64_t> pnf;
  // (nb, w): block min/max over finite pixels.
  std::vector<double> bmin, bmax;
  // (w + 1): prefix over columns of the column totals.
  std::vector<Compensated> qpos, qneg, qsq;
  std::vector<int64_t> qnf;
  // Sparse tables over columns: level l, column c covers [c, c + 2^l).
  std::vector<double> stmin, stmax;
  int levels = 0;
};

template <class T>
struct Image {
  const T* x;
  const Summary& s;
  bool skip;

  void scan(Acc& a, int64_t c, int64_t r0, int64_t r1) const {
    const int64_t w = s.w;
    for (int64_t r = r0; r < r1; ++r) {
      const double v = static_cast<double>(x[r * w + c]);
      if (skip && !std::isfinite(v)) continue;
      a.pos += (0.0 > v) ? 0.0 : v;
      a.neg += (0.0 < v) ? 0.0 : v;
      a.sq += v * v;
      a.min = a.min < v ? a.min : v;
      a.max = a.max > v ? a.max : v;
      a.count += 1;
    }
  }

  // Rows [r0, r1) of column c.
  void piece(Acc& a, int64_t c, int64_t r0, int64_t r1) const {
    const int64_t k0 = (r0 + B - 1) / B;  // first whole block
    const int64_t k1 = r1 == s.h ? s.nb : r1 / B;  // end of whole blocks
    if (k0 >= k1) {
      scan(a, c, r0, r1);
      return;
    }
    scan(a, c, r0, k0 * B);
    const int64_t w = s.w;
    a.pos += s.ppos[k1 * w + c] - s.ppos[k0 * w + c];
    a.neg += s.pneg[k1 * w + c] - s.pneg[k0 * w + c];
    a.sq += s.psq[k1 * w + c] - s.psq[k0 * w + c];
    const int64_t rows_end = std::min(k1 * B, s.h);
    int64_t n = rows_end - k0 * B;
    if (s.has_nonfinite) n -= s.pnf[k1 * w + c] - s.pnf[k0 * w + c];
    a.count += n;
    for (int64_t k = k0; k < k1; ++k) {
      const double mn = s.bmin[k * w + c], mx = s.bmax[k * w + c];
      a.min = a.min < mn ? a.min : mn;
      a.max = a.max > mx ? a.max : mx;
    }
    if (rows_end < r1) scan(a, c, rows_end, r1);
  }

  // Whole columns [c0, c1).
  void columns(Acc& a, int64_t c0, int64_t c1) const {
    if (c0 >= c1) return;
    a.pos += diff(s.qpos[c1], s.qpos[c0]);
    a.neg += diff(s.qneg[c1], s.qneg[c0]);
    a.sq += diff(s.qsq[c1], s.qsq[c0]);
    int64_t n = (c1 - c0) * s.h;
    if (s.has_nonfinite) n -= s.qnf[c1] - s.qnf[c0];
    a.count += n;
    const int l = 63 - __builtin_clzll(static_cast<unsigned long long>(c1 - c0));
    const int64_t base = static_cast<int64_t>(l) * s.w;
    const int64_t c2 = c1 - (int64_t(1) << l);
    const double mn = std::min(s.stmin[base + c0], s.stmin[base + c2]);
    const double mx = std::max(s.stmax[base + c0], s.stmax[base + c2]);
    a.min = a.min < mn ? a.min : mn;
    a.max = a.max > mx ? a.max : mx;
  }

  // Pixels [p, q) in column-major order, 0 <= p < q <= h*w.
  void run(Acc& a, int64_t p, int64_t q) const {
    const int64_t h = s.h;
    const int64_t c0 = p / h, r0 = p % h;
    const int64_t c1 = (q - 1) / h, r1 = (q - 1) % h + 1;
    if (c0 == c1) {
      if (r0 == 0 && r1 == h)
        columns(a, c0, c0 + 1);
      else
        piece(a, c0, r0, r1);
      return;
    }
    int64_t first = c0;
    if (r0 != 0) {
      piece(a, c0, r0, h);
      first = c0 + 1;
    }
    int64_t last = c1 + 1;
    if (r1 != h) {
      piece(a, c1, 0, r1);
      last = c1;
    }
    columns(a, first, last);
  }
};

template <class T>
void fill_blocks(Summary& s, const T* x, bool checked) {
  const int64_t h = s.h, w = s.w;
  std::vector<double> rp(static_cast<size_t>(w), 0.0), rn(rp), rs(rp);
  std::vector<int64_t> rnf(checked ? static_cast<size_t>(w) : 0, 0);
  for (int64_t r = 0; r < h; ++r) {
    const int64_t k = r / B;
    double* mn = &s.bmin[static_cast<size_t>(k * w)];
    double* mx = &s.bmax[static_cast<size_t>(k * w)];
    if (r % B == 0) {
      std::copy(rp.begin(), rp.end(), s.ppos.begin() + k * w);
      std::copy(rn.begin(), rn.end(), s.pneg.begin() + k * w);
      std::copy(rs.begin(), rs.end(), s.psq.begin() + k * w);
      if (checked) std::copy(rnf.begin(), rnf.end(), s.pnf.begin() + k * w);
      std::fill(mn, mn + w, kInf);
      std::fill(mx, mx + w, -kInf);
    }
    const T* row = x + r * w;
    if (!checked) {
      // No branch per pixel, so the compiler can vectorise this loop.
      for (int64_t c = 0; c < w; ++c) {
        const double v = static_cast<double>(row[c]);
        rp[c] += (0.0 > v) ? 0.0 : v;
        rn[c] += (0.0 < v) ? 0.0 : v;
        rs[c] += v * v;
        mn[c] = mn[c] < v ? mn[c] : v;
        mx[c] = mx[c] > v ? mx[c] : v;
      }
    } else {
      for (int64_t c = 0; c < w; ++c) {
        const double v = static_cast<double>(row[c]);
        if (!std::isfinite(v)) {
          rnf[c] += 1;
          continue;
        }
        rp[c] += (0.0 > v) ? 0.0 : v;
        rn[c] += (0.0 < v) ? 0.0 : v;
        rs[c] += v * v;
        mn[c] = mn[c] < v ? mn[c] : v;
        mx[c] = mx[c] > v ? mx[c] : v;
      }
    }
  }
  const int64_t k = s.nb;
  std::copy(rp.begin(), rp.end(), s.ppos.begin() + k * w);
  std::copy(rn.begin(), rn.end(), s.pneg.begin() + k * w);
  std::copy(rs.begin(), rs.end(), s.psq.begin() + k * w);
  if (checked) std::copy(rnf.begin(), rnf.end(), s.pnf.begin() + k * w);
}

template <class T>
int64_t first_nonfinite(const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(static_cast<double>(x[i]))) return i;
  return -1;
}

// Builds the summary of one image. Returns the row-major index of the first
// non-finite pixel when one exists and they are not skipped, else -1.
template <class T>
int64_t summarise(Summary& s, const T* x, int64_t h, int64_t w, bool skip) {
  s.h = h;
  s.w = w;
  s.nb = (h + B - 1) / B;
  const size_t prefix = static_cast<size_t>((s.nb + 1) * w), blocks = static_cast<size_t>(s.nb * w);
  s.ppos.resize(prefix);
  s.pneg.resize(prefix);
  s.psq.resize(prefix);
  s.bmin.resize(blocks);
  s.bmax.resize(blocks);
  s.has_nonfinite = false;
  fill_blocks(s, x, false);
  const double* last = &s.ppos[static_cast<size_t>(s.nb * w)];
  bool finite = true;
  for (int64_t c = 0; c < w && finite; ++c)
    finite = std::isfinite(last[c]) && std::isfinite(s.pneg[s.nb * w + c]) && std::isfinite(s.psq[s.nb * w + c]);
  if (!finite) {
    // Either a non-finite pixel or float64 values so large that their squares
    // overflow; only the first case changes anything.
    const int64_t bad = first_nonfinite(x, h * w);
    if (bad >= 0) {
      if (!skip) return bad;
      s.has_nonfinite = true;
      s.pnf.resize(prefix);
      fill_blocks(s, x, true);
    }
  }
  s.qpos.assign(static_cast<size_t>(w + 1), Compensated{});
  s.qneg.assign(static_cast<size_t>(w + 1), Compensated{});
  s.qsq.assign(static_cast<size_t>(w + 1), Compensated{});
  if (s.has_nonfinite) s.qnf.assign(static_cast<size_t>(w + 1), 0);
  const int64_t top = s.nb * w;
  for (int64_t c = 0; c < w; ++c) {
    s.qpos[c + 1] = s.qpos[c];
    s.qpos[c + 1].add(s.ppos[top + c]);
    s.qneg[c + 1] = s.qneg[c];
    s.qneg[c + 1].add(s.pneg[top + c]);
    s.qsq[c + 1] = s.qsq[c];
    s.qsq[c + 1].add(s.psq[top + c]);
    if (s.has_nonfinite) s.qnf[c + 1] = s.qnf[c] + s.pnf[top + c];
  }
  s.levels = 1;
  while ((int64_t(1) << s.levels) <= w) ++s.levels;
  s.stmin.resize(static_cast<size_t>(s.levels * w));
  s.stmax.resize(static_cast<size_t>(s.levels * w));
  for (int64_t c = 0; c < w; ++c) {
    double mn = kInf, mx = -kInf;
    for (int64_t k = 0; k < s.nb; ++k) {
      mn = std::min(mn, s.bmin[k * w + c]);
      mx = std::max(mx, s.bmax[k * w + c]);
    }
    s.stmin[c] = mn;
    s.stmax[c] = mx;
  }
  for (int l = 1; l < s.levels; ++l) {
    const int64_t half = int64_t(1) << (l - 1);
    const int64_t span = int64_t(1) << l;
    double* mn = &s.stmin[static_cast<size_t>(l * w)];
    double* mx = &s.stmax[static_cast<size_t>(l * w)];
    const double* pmn = mn - w;
    const double* pmx = mx - w;
    for (int64_t c = 0; c + span <= w; ++c) {
      mn[c] = std::min(pmn[c], pmn[c + half]);
      mx[c] = std::max(pmx[c], pmx[c + half]);
    }
  }
  return -1;
}

struct Scratch {
  Summary summary;
  std::vector<std::pair<int64_t, int64_t>> runs, all;
};

// Appends the runs of 1s of one instance; returns the sum of its counts.
int64_t append_runs(const uint32_t* counts, int64_t n, int64_t limit, std::vector<std::pair<int64_t, int64_t>>& out) {
  int64_t p = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = counts[i];
    if ((i & 1) && len > 0 && p + len <= limit) out.emplace_back(p, p + len);
    p += len;
  }
  return p;
}

// Sorts runs and joins those that overlap or touch.
void coalesce(std::vector<std::pair<int64_t, int64_t>>& runs) {
  if (runs.size() < 2) return;
  std::sort(runs.begin(), runs.end());
  size_t j = 0;
  for (size_t i = 1; i < runs.size(); ++i) {
    if (runs[i].first <= runs[j].second)
      runs[j].second = std::max(runs[j].second, runs[i].second);
    else
      runs[++j] = runs[i];
  }
  runs.resize(j + 1);
}

void store(const Acc& a, const StatsOutput& out, int64_t row) {
  out.count[row] = a.count;
  out.pos[row] = a.pos;
  out.neg[row] = a.neg;
  out.sq[row] = a.sq;
  if (a.count > 0) {
    out.min[row] = a.min;
    out.max[row] = a.max;
  }
}

template <class T>
RleError reduce_image(const RleInput& in, const StatsOutput& out, int64_t b, Scratch& sc) {
  RleError err;
  const RleImage& img = in.images[b];
  const T* x = static_cast<const T*>(img.saliency);
  const int64_t h = img.height, w = img.width, hw = h * w;
  const int64_t s0 = in.image_segments[b], s1 = in.image_segments[b + 1];
  const int64_t total_segments = in.image_segments[in.num_images];
  if (hw == 0) return err;
  Summary& s = sc.summary;
  const int64_t bad = summarise(s, x, h, w, in.skip_nonfinite);
  if (bad >= 0) {
    err.kind = RleError::NonFinite;
    err.image = b;
    err.pixel = bad;
    err.value = static_cast<double>(x[bad]);
    return err;
  }
  const Image<T> image{x, s, in.skip_nonfinite};
  sc.all.clear();
  for (int64_t seg = s0; seg < s1; ++seg) {
    sc.runs.clear();
    for (int64_t i = in.segment_instances[seg]; i < in.segment_instances[seg + 1]; ++i) {
      const int64_t c0 = in.instance_offsets[i], c1 = in.instance_offsets[i + 1];
      const int64_t length = append_runs(in.counts + c0, c1 - c0, hw, sc.runs);
      if (length != hw) {
        err.kind = RleError::BadLength;
        err.image = b;
        err.instance = i;
        err.length = length;
        return err;
      }
    }
    if (in.segment_instances[seg + 1] - in.segment_instances[seg] > 1) coalesce(sc.runs);
    Acc a;
    for (const auto& r : sc.runs) image.run(a, r.first, r.second);
    store(a, out, seg);
    if (in.unassigned) sc.all.insert(sc.all.end(), sc.runs.begin(), sc.runs.end());
  }
  if (in.unassigned) {
    coalesce(sc.all);
    Acc a;
    int64_t p = 0;
    for (const auto& r : sc.all) {
      if (r.first > p) image.run(a, p, r.first);
      p = r.second;
    }
    if (p < hw) image.run(a, p, hw);
    store(a, out, total_segments + b);
  }
  out.total_pos[b] = s.qpos[w].hi + s.qpos[w].lo;
  out.total_neg[b] = s.qneg[w].hi + s.qneg[w].lo;
  out.nonfinite[b] = s.has_nonfinite ? s.qnf[w] : 0;
  return err;
}

}  // namespace

RleError reduce_rle(const RleInput& in, const StatsOutput& out) {
  std::vector<RleError> errors(static_cast<size_t>(in.num_images));
  parallel_units(
      in.num_images, in.threads, [](int) { return Scratch(); },
      [&](Scratch& sc, int64_t b) {
        errors[static_cast<size_t>(b)] = in.saliency_type == SaliencyType::F32 ? reduce_image<float>(in, out, b, sc)
                                                                               : reduce_image<double>(in, out, b, sc);
      });
  for (const RleError& e : errors)
    if (e.kind != RleError::None) return e;
  return RleError{};
}

int64_t rle_counts_from_string(const char* s, int64_t n, uint32_t* out) {
  int64_t m = 0, p = 0;
  while (p < n) {
    int64_t x = 0;
    int k = 0;
    bool more = true;
    const int64_t start = p;
    while (more) {
      if (p >= n || k > 12) return -1 - (p < n ? p : start);
      const int c = static_cast<int>(static_cast<unsigned char>(s[p])) - 48;
      if (c < 0 || c > 63) return -1 - p;
      x |= static_cast<int64_t>(c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= -(int64_t(1) << (5 * k));
    }
    if (m > 2) x += static_cast<int64_t>(out[m - 2]);
    if (x < 0 || x > int64_t(0xFFFFFFFF)) return -1 - start;
    out[m++] = static_cast<uint32_t>(x);
  }
  return m;
}

}  // namespace sat
