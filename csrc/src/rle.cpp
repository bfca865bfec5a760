// RLE-native reduction; see sat/rle.hpp for the design.
//
// Like the other kernels this one trusts the shapes and offsets the bindings
// checked, but re-checks every run against the image size before using it,
// because the arrays may change while the GIL is released.
#include "sat/rle.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include "sat/accumulator.hpp"
#include "sat/dispatch.hpp"
#include "sat/threads.hpp"

namespace sat {

namespace {

constexpr int64_t B = kRleBlockRows;

// A double-double running sum (Knuth's TwoSum), for the image totals.
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

// The per-image summary, reused across the images a thread processes.
// Column-major layouts throughout, so that everything one column piece needs
// sits together in memory.
template <class T>
struct MinMax {
  T mn, mx;
};

// pos, neg and sq side by side: a node read is one cache line, not three.
struct Sums {
  double pos, neg, sq;
};

inline void add_sums(Accumulator& a, const Sums& s) {
  a.pos += s.pos;
  a.neg += s.neg;
  a.sq += s.sq;
}

// Sums over aligned ranges of n leaves (blocks of a column, or columns), in
// levels: level 0 is the leaves, node j of level l is the sum of leaves
// [j * 2^l, (j + 1) * 2^l), and level l has n >> l nodes. Every node is a sum
// of its own leaves only, so a range query adds nothing from outside the range:
// its rounding error is relative to the magnitude of the range itself, however
// large the values beside it (differences of prefix sums cancel those).
struct SumTree {
  int64_t n = 0;
  std::vector<int64_t> offset;  // start of each level; offset.back() = nodes per tree

  void shape(int64_t leaves) {
    n = leaves;
    offset.clear();
    int64_t at = 0;
    for (int64_t m = leaves; m > 0; m >>= 1) {
      offset.push_back(at);
      at += m;
    }
    offset.push_back(at);
  }
  int64_t nodes() const { return offset.back(); }

  // Fills levels 1.. of the tree at t from its leaves.
  void build(Sums* t) const {
    for (size_t l = 1; l + 1 < offset.size(); ++l) {
      const Sums* in = t + offset[l - 1];
      Sums* out = t + offset[l];
      const int64_t m = offset[l + 1] - offset[l];
      for (int64_t j = 0; j < m; ++j)
        out[j] =
            Sums{in[2 * j].pos + in[2 * j + 1].pos, in[2 * j].neg + in[2 * j + 1].neg, in[2 * j].sq + in[2 * j + 1].sq};
    }
  }

  // Adds leaves [a, b) of the tree at t to acc: at most two nodes per level,
  // in a fixed order. Whether a level contributes a node at either end is
  // data-dependent and unpredictable, so it is a select of the node or a zero
  // (adding +0.0 is exact: these sums are never -0.0) rather than a branch.
  void query(const Sums* t, int64_t a, int64_t b, Accumulator& acc) const {
    static constexpr Sums zero{0.0, 0.0, 0.0};
    const int64_t* off = offset.data();
    while (a < b) {
      const int64_t ua = a & 1, ub = b & 1;
      const Sums* na = ua ? t + *off + a : &zero;
      const Sums* nb = ub ? t + *off + b - 1 : &zero;
      add_sums(acc, *na);
      add_sums(acc, *nb);
      a = (a + ua) >> 1;
      b = (b - ub) >> 1;
      ++off;
    }
  }
};

template <class T>
struct Summary {
  int64_t h = 0, w = 0, nb = 0;  // rows, columns, blocks per column
  bool has_nonfinite = false;
  // (w, h): the saliency, transposed, so the few pixels a run end reads are
  // contiguous.
  std::vector<T> xt;
  // Per column, a SumTree over its blocks of B rows (column c's tree starts
  // at c * blocks_tree.nodes(); its leaves are the block sums).
  SumTree block_tree;
  std::vector<Sums> bsum;
  // (w, nb + 1): column prefix counts of non-finite pixels at block
  // boundaries (row min(k*B, h)); counts are exact, so prefixes are fine.
  std::vector<int64_t> pnf;
  // (block_levels, w, nb): per column, sparse tables over blocks; level 0
  // is the min/max of each block over its finite pixels, level l of block k
  // covers blocks [k, k + 2^l).
  std::vector<MinMax<T>> blocks;
  int block_levels = 0;
  // A SumTree over the columns; its leaves are the column totals.
  SumTree column_tree;
  std::vector<Sums> csum;
  // (w + 1): prefix over columns of the non-finite counts.
  std::vector<int64_t> qnf;
  // The image totals.
  double total_pos = 0.0, total_neg = 0.0;
  // (levels, w): sparse tables over columns.
  std::vector<MinMax<T>> cols;
  int levels = 0;

  // Min and max of blocks [k0, k1) of column c, k0 < k1: O(1).
  void block_range(int64_t c, int64_t k0, int64_t k1, T& mn, T& mx) const {
    const int l = 63 - __builtin_clzll(static_cast<unsigned long long>(k1 - k0));
    const int64_t base = static_cast<int64_t>(l) * nb * w + c * nb;
    const int64_t k2 = k1 - (int64_t(1) << l);
    mn = std::min(blocks[base + k0].mn, blocks[base + k2].mn);
    mx = std::max(blocks[base + k0].mx, blocks[base + k2].mx);
  }
};

int sparse_levels(int64_t n) {
  int levels = 1;
  while ((int64_t(1) << levels) <= n) ++levels;
  return levels;
}

// Builds levels 1.. of `outer` sparse tables of length n each, whose level 0
// is filled; level l holds outer * n entries.
template <class T>
void build_sparse(MinMax<T>* t, int levels, int64_t outer, int64_t n) {
  const int64_t count = outer * n;
  for (int l = 1; l < levels; ++l) {
    const int64_t half = int64_t(1) << (l - 1);
    const int64_t valid = n - (int64_t(1) << l) + 1;
    for (int64_t o = 0; o < outer; ++o) {
      const MinMax<T>* in = t + (l - 1) * count + o * n;
      MinMax<T>* out = t + l * count + o * n;
      for (int64_t i = 0; i < valid; ++i) {
        out[i].mn = std::min(in[i].mn, in[i + half].mn);
        out[i].mx = std::max(in[i].mx, in[i + half].mx);
      }
    }
  }
}

template <class T>
struct Image {
  const Summary<T>& s;
  bool skip;
  double inv_h;

  void scan(Accumulator& a, int64_t c, int64_t r0, int64_t r1) const {
    const T* col = s.xt.data() + c * s.h;
    // A local copy stays in registers; updating `a` in place made every pixel
    // wait for the store of the previous one. Same operations, same order.
    Accumulator t = a;
    for (int64_t r = r0; r < r1; ++r) {
      const double v = static_cast<double>(col[r]);
      if (skip && !std::isfinite(v)) continue;
      acc_add_pixel(t, v);
    }
    a = t;
  }

  // Rows [r0, r1) of column c.
  void piece(Accumulator& a, int64_t c, int64_t r0, int64_t r1) const {
    const int64_t k0 = (r0 + B - 1) / B;           // first whole block
    const int64_t k1 = r1 == s.h ? s.nb : r1 / B;  // end of whole blocks
    if (k0 >= k1) {
      scan(a, c, r0, r1);
      return;
    }
    scan(a, c, r0, k0 * B);
    s.block_tree.query(s.bsum.data() + c * s.block_tree.nodes(), k0, k1, a);
    const int64_t rows_end = std::min(k1 * B, s.h);
    int64_t n = rows_end - k0 * B;
    if (s.has_nonfinite) n -= s.pnf[c * (s.nb + 1) + k1] - s.pnf[c * (s.nb + 1) + k0];
    a.count += n;
    T mn, mx;
    s.block_range(c, k0, k1, mn, mx);
    a.min = vmin(a.min, static_cast<double>(mn));
    a.max = vmax(a.max, static_cast<double>(mx));
    if (rows_end < r1) scan(a, c, rows_end, r1);
  }

  // Whole columns [c0, c1).
  void columns(Accumulator& a, int64_t c0, int64_t c1) const {
    if (c0 >= c1) return;
    s.column_tree.query(s.csum.data(), c0, c1, a);
    int64_t n = (c1 - c0) * s.h;
    if (s.has_nonfinite) n -= s.qnf[c1] - s.qnf[c0];
    a.count += n;
    const int l = 63 - __builtin_clzll(static_cast<unsigned long long>(c1 - c0));
    const int64_t base = static_cast<int64_t>(l) * s.w;
    const int64_t c2 = c1 - (int64_t(1) << l);
    const double mn = std::min(s.cols[base + c0].mn, s.cols[base + c2].mn);
    const double mx = std::max(s.cols[base + c0].mx, s.cols[base + c2].mx);
    a.min = vmin(a.min, mn);
    a.max = vmax(a.max, mx);
  }

  // column = p / h, row = p % h, by a reciprocal (an integer division per
  // run end costs as much as the rest of the run's work).
  void divide(int64_t p, int64_t& column, int64_t& row) const {
    int64_t c = static_cast<int64_t>(static_cast<double>(p) * inv_h);
    int64_t r = p - c * s.h;
    while (r < 0) {
      --c;
      r += s.h;
    }
    while (r >= s.h) {
      ++c;
      r -= s.h;
    }
    column = c;
    row = r;
  }

  // Pixels [p, q) in column-major order, 0 <= p < q <= h*w.
  void run(Accumulator& a, int64_t p, int64_t q) const {
    const int64_t h = s.h;
    int64_t c0, r0, c1, r1;
    divide(p, c0, r0);
    divide(q - 1, c1, r1);
    r1 += 1;
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

// One block of rows [r0, r1) of columns [c0, c0 + S): the block's sums, min
// and max (non-finite counts continue from the previous block boundary). S columns
// at a time keeps every accumulator in registers and lets the compiler
// vectorise across columns (the unchecked variant has no branch per pixel).
template <int S, bool Checked, class T>
inline void fill_strip(Summary<T>& s, const T* x, int64_t k, int64_t r0, int64_t r1, int64_t c0) {
  const int64_t w = s.w, np1 = s.nb + 1;
  constexpr T inf = kInfinity<T>;
  double p[S], q[S], sq[S];
  T mn[S], mx[S];
  int64_t nf[S];
  for (int j = 0; j < S; ++j) {
    const int64_t i = (c0 + j) * np1 + k;
    p[j] = q[j] = sq[j] = 0.0;
    nf[j] = Checked ? s.pnf[i] : 0;
    mn[j] = inf;
    mx[j] = -inf;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = x + r * w + c0;
    for (int j = 0; j < S; ++j) {
      const T t = row[j];
      if (Checked && !std::isfinite(t)) {
        nf[j] += 1;
        continue;
      }
      lane_update(p[j], q[j], sq[j], static_cast<double>(t));
      mn[j] = vmin(mn[j], t);
      mx[j] = vmax(mx[j], t);
    }
  }
  for (int j = 0; j < S; ++j) {
    const int64_t i = (c0 + j) * np1 + k + 1;
    s.bsum[(c0 + j) * s.block_tree.nodes() + k] = Sums{p[j], q[j], sq[j]};
    if (Checked) s.pnf[i] = nf[j];
    s.blocks[(c0 + j) * s.nb + k] = MinMax<T>{mn[j], mx[j]};
  }
}

#if defined(__SSE2__)
// The unchecked 4-column strip with SSE2 (baseline on x86-64): GCC turns the
// portable ternaries into unpredictable branches here. NaN handling does not
// matter on this path: a non-finite pixel makes the sums non-finite, and the
// block is then redone by the checked variant.
struct Lanes4 {
  __m128d p0, p1, q0, q1, s0, s1, mn0, mn1, mx0, mx1;
  void add(__m128d a, __m128d b) {
    lane_update(p0, q0, s0, mn0, mx0, a);
    lane_update(p1, q1, s1, mn1, mx1, b);
  }
  void add(__m128 v) { add(_mm_cvtps_pd(v), _mm_cvtps_pd(_mm_movehl_ps(v, v))); }
};

// Accumulates rows [r0, r1) of columns c0..c0+3 and writes them, transposed
// in registers, to the column-major copy.
inline void strip4_rows(Lanes4& l, const float* x, float* xt, int64_t w, int64_t h, int64_t r0, int64_t r1,
                        int64_t c0) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    // The 16 rows of a block are read as 16 interleaved streams, which the
    // hardware prefetchers follow badly: fetch a few cache lines ahead.
    for (int j = 0; j < 4; ++j) _mm_prefetch(reinterpret_cast<const char*>(x + (r + j) * w + c0 + 64), _MM_HINT_T0);
    __m128 v0 = _mm_loadu_ps(x + r * w + c0), v1 = _mm_loadu_ps(x + (r + 1) * w + c0);
    __m128 v2 = _mm_loadu_ps(x + (r + 2) * w + c0), v3 = _mm_loadu_ps(x + (r + 3) * w + c0);
    l.add(v0);
    l.add(v1);
    l.add(v2);
    l.add(v3);
    _MM_TRANSPOSE4_PS(v0, v1, v2, v3);
    _mm_storeu_ps(xt + c0 * h + r, v0);
    _mm_storeu_ps(xt + (c0 + 1) * h + r, v1);
    _mm_storeu_ps(xt + (c0 + 2) * h + r, v2);
    _mm_storeu_ps(xt + (c0 + 3) * h + r, v3);
  }
  for (; r < r1; ++r) {
    const float* row = x + r * w + c0;
    l.add(_mm_loadu_ps(row));
    for (int j = 0; j < 4; ++j) xt[(c0 + j) * h + r] = row[j];
  }
}

inline void strip4_rows(Lanes4& l, const double* x, double* xt, int64_t w, int64_t h, int64_t r0, int64_t r1,
                        int64_t c0) {
  int64_t r = r0;
  for (; r + 2 <= r1; r += 2) {
    const __m128d a0 = _mm_loadu_pd(x + r * w + c0), b0 = _mm_loadu_pd(x + r * w + c0 + 2);
    const __m128d a1 = _mm_loadu_pd(x + (r + 1) * w + c0), b1 = _mm_loadu_pd(x + (r + 1) * w + c0 + 2);
    l.add(a0, b0);
    l.add(a1, b1);
    _mm_storeu_pd(xt + c0 * h + r, _mm_unpacklo_pd(a0, a1));
    _mm_storeu_pd(xt + (c0 + 1) * h + r, _mm_unpackhi_pd(a0, a1));
    _mm_storeu_pd(xt + (c0 + 2) * h + r, _mm_unpacklo_pd(b0, b1));
    _mm_storeu_pd(xt + (c0 + 3) * h + r, _mm_unpackhi_pd(b0, b1));
  }
  for (; r < r1; ++r) {
    const double* row = x + r * w + c0;
    l.add(_mm_loadu_pd(row), _mm_loadu_pd(row + 2));
    for (int j = 0; j < 4; ++j) xt[(c0 + j) * h + r] = row[j];
  }
}

template <class T>
inline void fill_strip4_sse2(Summary<T>& s, const T* x, int64_t k, int64_t r0, int64_t r1, int64_t c0) {
  double p[4], q[4], sq[4], mn[4], mx[4];
  Lanes4 l;
  l.p0 = l.p1 = l.q0 = l.q1 = l.s0 = l.s1 = _mm_setzero_pd();
  l.mn0 = l.mn1 = _mm_set1_pd(kInf);
  l.mx0 = l.mx1 = _mm_set1_pd(-kInf);
  strip4_rows(l, x, s.xt.data(), s.w, s.h, r0, r1, c0);
  const __m128d p0 = l.p0, p1 = l.p1, q0 = l.q0, q1 = l.q1, s0 = l.s0, s1 = l.s1;
  const __m128d mn0 = l.mn0, mn1 = l.mn1, mx0 = l.mx0, mx1 = l.mx1;
  _mm_storeu_pd(p, p0);
  _mm_storeu_pd(p + 2, p1);
  _mm_storeu_pd(q, q0);
  _mm_storeu_pd(q + 2, q1);
  _mm_storeu_pd(sq, s0);
  _mm_storeu_pd(sq + 2, s1);
  _mm_storeu_pd(mn, mn0);
  _mm_storeu_pd(mn + 2, mn1);
  _mm_storeu_pd(mx, mx0);
  _mm_storeu_pd(mx + 2, mx1);
  for (int j = 0; j < 4; ++j) {
    s.bsum[(c0 + j) * s.block_tree.nodes() + k] = Sums{p[j], q[j], sq[j]};
    // Exact: the values came from T.
    s.blocks[(c0 + j) * s.nb + k] = MinMax<T>{static_cast<T>(mn[j]), static_cast<T>(mx[j])};
  }
}
#endif

// The 8-column strip of the kernel table (rle_avx2.cpp) for T, null when the
// chosen variant has none; fill_strip8 translates the summary's layout to and
// from its raw arrays.
inline RleStrip8F32Fn strip8_of(const KernelTable& t, const float*) { return t.rle_strip8_f32; }
inline RleStrip8F64Fn strip8_of(const KernelTable& t, const double*) { return t.rle_strip8_f64; }

template <class T, class Strip>
void fill_strip8(Strip strip8, Summary<T>& s, const T* x, int64_t k, int64_t r0, int64_t r1, int64_t c0) {
  double sums[24] = {};  // the block's sums start from zero
  T mn[8], mx[8];
  strip8(x, s.w, s.h, r0, r1, c0, sums, mn, mx, s.xt.data());
  for (int j = 0; j < 8; ++j) {
    s.bsum[(c0 + j) * s.block_tree.nodes() + k] = Sums{sums[j], sums[8 + j], sums[16 + j]};
    s.blocks[(c0 + j) * s.nb + k] = MinMax<T>{mn[j], mx[j]};
  }
}

template <bool Checked, class T>
void fill_blocks(Summary<T>& s, const T* x) {
  constexpr int S = 4;
  const auto strip8 = Checked ? nullptr : strip8_of(kernels(), x);
  const int64_t np1 = s.nb + 1;
  if (Checked)
    for (int64_t c = 0; c < s.w; ++c) s.pnf[c * np1] = 0;
  // Block by block, so the rows of one block are read from memory once and
  // then stay in cache while their columns are swept.
  for (int64_t k = 0; k < s.nb; ++k) {
    const int64_t r0 = k * B, r1 = std::min(s.h, r0 + B);
    int64_t c = 0;
    if (strip8 != nullptr)
      for (; c + 8 <= s.w; c += 8) fill_strip8(strip8, s, x, k, r0, r1, c);
#if defined(__SSE2__)
    if (!Checked)
      for (; c + S <= s.w; c += S) fill_strip4_sse2(s, x, k, r0, r1, c);
#endif
    const int64_t c_vec = c;
    for (; c + S <= s.w; c += S) fill_strip<S, Checked>(s, x, k, r0, r1, c);
    for (; c < s.w; ++c) fill_strip<1, Checked>(s, x, k, r0, r1, c);
    if (!Checked) {
      // Columns the vector strips did not copy.
      T* xt = s.xt.data();
      for (c = c_vec; c < s.w; ++c)
        for (int64_t r = r0; r < r1; ++r) xt[c * s.h + r] = x[r * s.w + c];
    }
  }
}

// Builds every column's block tree from its block sums (the tree's leaves),
// and the column totals (the leaves of the column tree).
template <class T>
void build_sums(Summary<T>& s) {
  const int64_t nodes = s.block_tree.nodes();
  for (int64_t c = 0; c < s.w; ++c) {
    Sums* t = s.bsum.data() + c * nodes;
    s.block_tree.build(t);
    Accumulator total = acc_identity();
    s.block_tree.query(t, 0, s.nb, total);
    s.csum[static_cast<size_t>(c)] = Sums{total.pos, total.neg, total.sq};
  }
}

// Builds the summary of one image. Returns the row-major index of the first
// non-finite pixel when one exists and they are not skipped, else -1.
template <class T>
int64_t summarise(Summary<T>& s, const T* x, int64_t h, int64_t w, bool skip) {
  s.h = h;
  s.w = w;
  s.nb = (h + B - 1) / B;
  const int64_t np1 = s.nb + 1;
  const size_t prefix = static_cast<size_t>(np1 * w), blocks = static_cast<size_t>(s.nb * w);
  s.xt.resize(static_cast<size_t>(h * w));
  s.block_tree.shape(s.nb);
  s.bsum.resize(static_cast<size_t>(s.block_tree.nodes() * w));
  s.column_tree.shape(w);
  s.csum.resize(static_cast<size_t>(s.column_tree.nodes()));
  s.block_levels = sparse_levels(s.nb);
  s.blocks.resize(blocks * static_cast<size_t>(s.block_levels));
  s.has_nonfinite = false;
  fill_blocks<false>(s, x);
  build_sums(s);
  bool finite = true;
  for (int64_t c = 0; c < w && finite; ++c) {
    const Sums& t = s.csum[static_cast<size_t>(c)];
    finite = std::isfinite(t.pos) && std::isfinite(t.neg) && std::isfinite(t.sq);
  }
  if (!finite) {
    // Either a non-finite pixel or float64 values so large that their squares
    // overflow; only the first case changes anything.
    const int64_t bad = first_nonfinite(x, h * w);
    if (bad >= 0) {
      if (!skip) return bad;
      s.has_nonfinite = true;
      s.pnf.resize(prefix);
      fill_blocks<true>(s, x);
      build_sums(s);
    }
  }
  s.column_tree.build(s.csum.data());
  Compensated pos, neg;
  for (int64_t c = 0; c < w; ++c) {
    pos.add(s.csum[static_cast<size_t>(c)].pos);
    neg.add(s.csum[static_cast<size_t>(c)].neg);
  }
  s.total_pos = pos.hi + pos.lo;
  s.total_neg = neg.hi + neg.lo;
  if (s.has_nonfinite) {
    s.qnf.assign(static_cast<size_t>(w + 1), 0);
    for (int64_t c = 0; c < w; ++c) s.qnf[c + 1] = s.qnf[c] + s.pnf[c * np1 + s.nb];
  }
  build_sparse(s.blocks.data(), s.block_levels, w, s.nb);
  s.levels = sparse_levels(w);
  s.cols.resize(static_cast<size_t>(s.levels * w));
  for (int64_t c = 0; c < w; ++c) s.block_range(c, 0, s.nb, s.cols[c].mn, s.cols[c].mx);
  build_sparse(s.cols.data(), s.levels, 1, w);
  return -1;
}

struct Scratch {
  Summary<float> f32;
  Summary<double> f64;
  Summary<float>& summary(const float*) { return f32; }
  Summary<double>& summary(const double*) { return f64; }
  std::vector<float> xt32;
  std::vector<double> xt64;
  std::vector<float>& transposed(const float*) { return xt32; }
  std::vector<double>& transposed(const double*) { return xt64; }
  std::vector<PixelRun> runs, all, gaps;
};

// Appends the runs of 1s of one instance; returns the sum of its counts.
int64_t append_runs(const uint32_t* counts, int64_t n, int64_t limit, std::vector<PixelRun>& out) {
  int64_t p = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = counts[i];
    if ((i & 1) && len > 0 && p + len <= limit) out.push_back(PixelRun{p, p + len});
    p += len;
  }
  return p;
}

// Sorts runs and joins those that overlap or touch.
void coalesce(std::vector<PixelRun>& runs) {
  if (runs.size() < 2) return;
  std::sort(runs.begin(), runs.end(), [](const PixelRun& a, const PixelRun& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  size_t j = 0;
  for (size_t i = 1; i < runs.size(); ++i) {
    if (runs[i].begin <= runs[j].end)
      runs[j].end = std::max(runs[j].end, runs[i].end);
    else
      runs[++j] = runs[i];
  }
  runs.resize(j + 1);
}

// Whether to reduce an image's runs pixel by pixel over a transposed copy
// rather than through the summary (see sat/rle.hpp). Measured on 640x480
// segmenter output (issue 14, one thread): the copy and the image totals cost
// 0.38 ns per image pixel, then 0.2 ns per covered pixel and 15 ns per run;
// the summary costs 0.95 ns per image pixel, then 41 ns per run. So the area
// path wins while 0.2 * area <= 0.57 * pixels + 26 * runs. The choice depends
// on the image's masks alone, never on threads or batches.
bool prefer_area(int64_t area, int64_t runs, int64_t pixels) {
  constexpr double kPerCoveredPixel = 0.2, kSummaryExtraPerPixel = 0.57, kTreeExtraPerRun = 26.0;
  return kPerCoveredPixel * static_cast<double>(area) <=
         kSummaryExtraPerPixel * static_cast<double>(pixels) + kTreeExtraPerRun * static_cast<double>(runs);
}

// Collects segment seg's runs into sc.runs (its instances' runs, joined when
// there are several), checking each instance against the image size.
Error segment_runs(const RleInput& in, int64_t b, int64_t seg, int64_t h, int64_t w, Scratch& sc) {
  sc.runs.clear();
  for (int64_t i = in.segment_instances[seg]; i < in.segment_instances[seg + 1]; ++i) {
    const int64_t c0 = in.instance_offsets[i], c1 = in.instance_offsets[i + 1];
    const int64_t length = append_runs(in.counts + c0, c1 - c0, h * w, sc.runs);
    if (length != h * w) return rle_length_error(b, i, length, h, w);
  }
  if (in.segment_instances[seg + 1] - in.segment_instances[seg] > 1) coalesce(sc.runs);
  return Error{};
}

// The runs between sc.all's (joined first), then [last end, hw), into sc.gaps.
void unassigned_runs(int64_t hw, Scratch& sc) {
  coalesce(sc.all);
  sc.gaps.clear();
  int64_t p = 0;
  for (const PixelRun& r : sc.all) {
    if (r.begin > p) sc.gaps.push_back(PixelRun{p, r.begin});
    p = r.end;
  }
  if (p < hw) sc.gaps.push_back(PixelRun{p, hw});
}

// Whether image b's segments are cheaper by area: the number of runs and the
// pixels they cover, read off the counts without storing them (the run lists
// of every segment at once would crowd the summary out of cache). Instances of
// one segment that overlap count twice and the unassigned pixels are
// estimated: an estimate is all a cost model needs, and it is still a
// function of the masks alone.
bool image_prefers_area(const RleInput& in, int64_t b, int64_t hw) {
  int64_t area = 0, runs = 0;
  for (int64_t i = in.segment_instances[in.image_segments[b]]; i < in.segment_instances[in.image_segments[b + 1]];
       ++i) {
    for (int64_t c = in.instance_offsets[i] + 1; c < in.instance_offsets[i + 1]; c += 2) {
      area += in.counts[c];
      runs += in.counts[c] > 0;
    }
  }
  if (in.unassigned) {
    area += area < hw ? hw - area : 0;
    runs *= 2;
  }
  return prefer_area(area, runs, hw);
}

// Each segment of image b (its instances' runs joined), then its unassigned
// pixels when asked, reduced by reduce(runs, acc) into its output row.
template <class F>
Error reduce_segments(const RleInput& in, const StatsOutput& out, int64_t b, Scratch& sc, F&& reduce) {
  const RleImage& img = in.images[b];
  const int64_t h = img.height, w = img.width;
  sc.all.clear();
  for (int64_t seg = in.image_segments[b]; seg < in.image_segments[b + 1]; ++seg) {
    if (const Error e = segment_runs(in, b, seg, h, w, sc)) return e;
    Accumulator a = acc_identity();
    reduce(sc.runs, a);
    acc_store(a, out, seg);
    if (in.unassigned) sc.all.insert(sc.all.end(), sc.runs.begin(), sc.runs.end());
  }
  if (in.unassigned) {
    unassigned_runs(h * w, sc);
    Accumulator a = acc_identity();
    reduce(sc.gaps, a);
    acc_store(a, out, in.image_segments[in.num_images] + b);
  }
  return Error{};
}

template <class T>
Error reduce_by_area(const RleInput& in, const StatsOutput& out, int64_t b, const T* x, int64_t h, int64_t w,
                     Scratch& sc) {
  const int64_t hw = h * w;
  const KernelTable& k = kernels();
  const int type = in.saliency_type == SaliencyType::F32 ? 0 : 1;
  // The image totals, which also tell whether any pixel is non-finite: NaN
  // reaches both sums, +inf pos and -inf neg.
  SignedSums all = k.reduce_signed[type](x, hw);
  bool skip = false;
  int64_t nonfinite = 0;
  if (!(std::isfinite(all.pos) && std::isfinite(all.neg))) {
    const int64_t bad = first_nonfinite(x, hw);
    if (bad >= 0) {
      if (!in.skip_nonfinite) return nonfinite_error(b, bad / w, bad % w, static_cast<double>(x[bad]));
      skip = true;
      const PixelRun whole{0, hw};
      Accumulator finite = acc_identity();
      nonfinite = k.reduce_runs[type](x, &whole, 1, true, &finite);
      all = SignedSums{finite.pos, finite.neg};
    }
  }
  std::vector<T>& xt = sc.transposed(x);
  xt.resize(static_cast<size_t>(hw));
  k.transpose[type](x, h, w, xt.data());
  const Error e = reduce_segments(in, out, b, sc, [&](const std::vector<PixelRun>& runs, Accumulator& a) {
    k.reduce_runs[type](xt.data(), runs.data(), static_cast<int64_t>(runs.size()), skip, &a);
  });
  if (e) return e;
  out.total_pos[b] = all.pos;
  out.total_neg[b] = all.neg;
  out.nonfinite[b] = nonfinite;
  return Error{};
}

template <class T>
Error reduce_image(const RleInput& in, const StatsOutput& out, int64_t b, Scratch& sc) {
  const RleImage& img = in.images[b];
  const T* x = static_cast<const T*>(img.saliency);
  const int64_t h = img.height, w = img.width, hw = h * w;
  if (hw == 0) return Error{};
  const bool by_area = in.path == RlePath::area || (in.path == RlePath::automatic && image_prefers_area(in, b, hw));
  if (by_area) return reduce_by_area(in, out, b, x, h, w, sc);
  Summary<T>& s = sc.summary(x);
  const int64_t bad = summarise(s, x, h, w, in.skip_nonfinite);
  if (bad >= 0) return nonfinite_error(b, bad / w, bad % w, static_cast<double>(x[bad]));
  const Image<T> image{s, in.skip_nonfinite, 1.0 / static_cast<double>(h)};
  const Error e = reduce_segments(in, out, b, sc, [&](const std::vector<PixelRun>& runs, Accumulator& a) {
    for (const PixelRun& r : runs) image.run(a, r.begin, r.end);
  });
  if (e) return e;
  out.total_pos[b] = s.total_pos;
  out.total_neg[b] = s.total_neg;
  out.nonfinite[b] = s.has_nonfinite ? s.qnf[w] : 0;
  return Error{};
}

}  // namespace

Error reduce_rle(const RleInput& in, const StatsOutput& out) {
  std::vector<Error> errors(static_cast<size_t>(in.num_images));
  parallel_units(
      in.num_images, in.threads, [](int) { return Scratch(); },
      [&](Scratch& sc, int64_t b) {
        errors[static_cast<size_t>(b)] = in.saliency_type == SaliencyType::F32 ? reduce_image<float>(in, out, b, sc)
                                                                               : reduce_image<double>(in, out, b, sc);
      });
  for (const Error& e : errors)
    if (e) return e;
  return Error{};
}

int64_t rle_counts_from_string(const char* s, int64_t n, uint32_t* out, int64_t* overlong) {
  *overlong = -1;
  int64_t m = 0, p = 0;
  while (p < n) {
    // Unsigned: the 5-bit groups are placed with shifts of at most 30 bits
    // (kMaxCountChars groups), so nothing shifts past the width of the type.
    uint64_t bits = 0;
    int k = 0;
    bool more = true;
    const int64_t start = p;
    while (more) {
      if (p >= n) return -1 - start;
      if (k == kMaxCountChars) {
        *overlong = start;
        return -1 - start;
      }
      const int c = static_cast<int>(static_cast<unsigned char>(s[p])) - 48;
      if (c < 0 || c > 63) return -1 - p;
      bits |= static_cast<uint64_t>(c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (!more && (c & 0x10)) bits |= ~uint64_t(0) << (5 * k);  // sign-extend; 5 * k <= 35
    }
    int64_t x = static_cast<int64_t>(bits);  // two's complement: |x| < 2**35
    if (m > 2) x += static_cast<int64_t>(out[m - 2]);
    if (x < 0 || x > int64_t(0xFFFFFFFF)) {
      *overlong = start;
      return -1 - start;
    }
    out[m++] = static_cast<uint32_t>(x);
  }
  return m;
}

}  // namespace sat
