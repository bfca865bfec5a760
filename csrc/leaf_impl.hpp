// Leaf kernels written once against an `Ops` policy that supplies the
// instruction-set specific pieces:
//   template <class T> static RunStats reduce(const T* x, int64_t n);
//   static void add_pixel(PixelAccumulator& a, double v);
//   static int64_t find_word(const uint64_t* p, int64_t w, int64_t end, uint64_t skip);
//       (first index in [w, end) whose word differs from `skip`, else end)
//   template <class L> static int64_t run_end(const L* lab, int64_t i, int64_t n, L l);
//   static void pack_plane(const uint8_t* m, int64_t pixels, uint64_t* out);
//   static uint64_t xor_sum(const uint8_t* p, int64_t bytes);
// `reduce` must follow the lane order documented on RunStats so that every
// instruction set produces bitwise identical results.
//
// This file is included inside a per-architecture namespace; it must not be
// included anywhere else.

// The reduction of one run of pixels. Pixel i of a run is accumulated into
// lane i % 8 (lanes start at +0 and +-inf); the lanes are then combined as
// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). pos/neg use max(0, x)/min(0, x)
// with NaN propagating. Every Ops::reduce must follow this order exactly.
struct RunStats {
  double pos;
  double neg;
  double sq;
  double min;
  double max;
};

constexpr double kInf = __builtin_huge_val();

// Branch-free min/max with the semantics of `a < b ? a : b` / `a > b ? a : b`
// (the second operand wins on NaN), which is exactly what minsd/maxsd do.
// Written as ternaries, compilers emit unpredictable branches on random data.
inline double dmin(double a, double b) {
#if defined(__SSE2__)
  return _mm_cvtsd_f64(_mm_min_sd(_mm_set_sd(a), _mm_set_sd(b)));
#else
  return a < b ? a : b;
#endif
}
inline double dmax(double a, double b) {
#if defined(__SSE2__)
  return _mm_cvtsd_f64(_mm_max_sd(_mm_set_sd(a), _mm_set_sd(b)));
#else
  return a > b ? a : b;
#endif
}

// One pixel into running sums: the shared tail of every reduction.
inline void pixel_into(double& pos, double& neg, double& sq, double& mn, double& mx, double v) {
  pos += dmax(0.0, v);
  neg += dmin(0.0, v);
  sq += v * v;
  mn = dmin(mn, v);
  mx = dmax(mx, v);
}

inline void acc_reset(Accumulator& a) {
  a.pos = 0.0;
  a.neg = 0.0;
  a.sq = 0.0;
  a.min = kInf;
  a.max = -kInf;
  a.count = 0;
}

inline void acc_add_run(Accumulator& a, const RunStats& r, int64_t n) {
  a.pos += r.pos;
  a.neg += r.neg;
  a.sq += r.sq;
  a.min = dmin(a.min, r.min);
  a.max = dmax(a.max, r.max);
  a.count += n;
}

inline void acc_add_pixel(Accumulator& a, double v) {
  pixel_into(a.pos, a.neg, a.sq, a.min, a.max, v);
  a.count += 1;
}

inline void acc_merge(Accumulator& a, const Accumulator& b) {
  a.pos += b.pos;
  a.neg += b.neg;
  a.sq += b.sq;
  a.min = dmin(a.min, b.min);
  a.max = dmax(a.max, b.max);
  a.count += b.count;
}

inline void touch(ChunkScratch& s, int64_t slot) {
  if (s.acc[slot].count == 0) s.touched[s.n_touched++] = slot;
}

template <class T>
inline int64_t first_nonfinite(const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!__builtin_isfinite(x[i])) return i;
  return -1;
}

// Reduces x[a, b) into acc, skipping non-finite pixels when asked.
template <class Ops, bool Skip, class T>
inline int64_t add_range(Accumulator& acc, const T* x, int64_t a, int64_t b) {
  if constexpr (!Skip) {
    acc_add_run(acc, Ops::reduce(x + a, b - a), b - a);
    return 0;
  } else {
    int64_t skipped = 0;
    int64_t i = a;
    while (i < b) {
      if (!__builtin_isfinite(x[i])) {
        ++skipped;
        ++i;
        continue;
      }
      int64_t j = i + 1;
      while (j < b && __builtin_isfinite(x[j])) ++j;
      acc_add_run(acc, Ops::reduce(x + i, j - i), j - i);
      i = j;
    }
    return skipped;
  }
}

template <class L>
inline bool label_slot(L l, const LabelChunkArgs& a, int64_t& slot) {
  const int64_t v = static_cast<int64_t>(l);
  if (a.has_ignore && v == a.ignore_index) {
    slot = a.num_segments;
    return true;
  }
  if (v < 0 || v >= a.num_segments) return false;
  slot = v;
  return true;
}

// Mean run length of the first pixels decides between the run-aware path and
// the per-pixel path. It depends only on the chunk's own labels, so the choice
// (and with it the rounding) is the same for any thread count.
constexpr int64_t kRunSample = 1024;
constexpr int64_t kMinMeanRun = 8;

template <class L>
inline bool prefer_runs(const L* lab, int64_t n) {
  const int64_t m = n < kRunSample ? n : kRunSample;
  int64_t changes = 0;
  for (int64_t i = 1; i < m; ++i) changes += lab[i] != lab[i - 1];
  return m >= kMinMeanRun * (changes + 1);
}

template <class Ops, bool Skip, class T, class L>
inline ChunkResult label_runs(const T* x, const L* lab, const LabelChunkArgs& a, ChunkScratch& s) {
  ChunkResult r;
  int64_t i = 0;
  const int64_t n = a.pixels;
  while (i < n) {
    const L l = lab[i];
    int64_t slot;
    if (!label_slot(l, a, slot)) {
      r.error = KernelError::LabelOutOfRange;
      r.bad_pixel = i;
      r.bad_label = static_cast<int64_t>(l);
      return r;
    }
    const int64_t j = Ops::run_end(lab, i + 1, n, l);
    touch(s, slot);
    r.nonfinite += add_range<Ops, Skip>(s.acc[slot], x, i, j);
    // A run of only non-finite pixels leaves count at 0: forget the slot.
    if (Skip && s.acc[slot].count == 0 && s.n_touched > 0 && s.touched[s.n_touched - 1] == slot)
      --s.n_touched;
    i = j;
  }
  return r;
}

// Worst-case labels (noise): one update per pixel, alternating between two
// accumulator sets so consecutive pixels do not wait on each other's stores.
template <class T, class L>
inline ChunkResult label_scatter(const T* x, const L* lab, const LabelChunkArgs& a, ChunkScratch& s) {
  ChunkResult r;
  const int64_t n = a.pixels;
  int64_t i = 0;
  for (; i < n; ++i) {
    int64_t slot;
    if (!label_slot(lab[i], a, slot)) {
      r.error = KernelError::LabelOutOfRange;
      r.bad_pixel = i;
      r.bad_label = static_cast<int64_t>(lab[i]);
      break;
    }
    if ((i & 1) == 0 || s.acc2 == nullptr) {
      touch(s, slot);
      acc_add_pixel(s.acc[slot], static_cast<double>(x[i]));
    } else {
      if (s.acc2[slot].count == 0) s.touched2[s.n_touched2++] = slot;
      acc_add_pixel(s.acc2[slot], static_cast<double>(x[i]));
    }
  }
  for (int64_t t = 0; t < s.n_touched2; ++t) {
    const int64_t slot = s.touched2[t];
    touch(s, slot);
    acc_merge(s.acc[slot], s.acc2[slot]);
    acc_reset(s.acc2[slot]);
  }
  s.n_touched2 = 0;
  return r;
}

// Noisy labels with a small vocabulary: branch-free per-pixel updates into
// two PixelAccumulator sets (even and odd pixels, so neighbours never wait on
// each other's stores). Bad labels go to a trap slot and are located after.
template <class Ops, class T, class L>
inline ChunkResult label_lanes(const T* x, const L* lab, const LabelChunkArgs& a, ChunkScratch& s) {
  ChunkResult r;
  const int64_t n = a.pixels;
  const uint64_t k = static_cast<uint64_t>(a.num_segments);  // slot of ignored pixels
  const int64_t stride = a.num_segments + 2;
  PixelAccumulator* even = s.lanes;
  PixelAccumulator* odd = s.lanes + stride;
  uint64_t bad = 0;
  auto slot_of = [&](L l) {
    const int64_t v = static_cast<int64_t>(l);
    uint64_t u = static_cast<uint64_t>(v);
    u = (a.has_ignore && v == a.ignore_index) ? k : u;
    bad |= static_cast<uint64_t>(u > k);
    return u > k ? k + 1 : u;
  };
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    const uint64_t s0 = slot_of(lab[i]);
    const uint64_t s1 = slot_of(lab[i + 1]);
    Ops::add_pixel(even[s0], static_cast<double>(x[i]));
    Ops::add_pixel(odd[s1], static_cast<double>(x[i + 1]));
  }
  if (i < n) Ops::add_pixel(even[slot_of(lab[i])], static_cast<double>(x[i]));
  for (int64_t slot = 0; slot < stride; ++slot) {
    PixelAccumulator& e = even[slot];
    PixelAccumulator& o = odd[slot];
    if (slot <= a.num_segments && e.count + o.count > 0.0) {
      Accumulator& acc = s.acc[slot];
      acc.pos = e.pos + o.pos;
      acc.neg = e.neg + o.neg;
      acc.sq = e.sq + o.sq;
      acc.min = dmin(e.min, o.min);
      acc.max = -dmin(e.negmax, o.negmax);
      acc.count = static_cast<int64_t>(e.count + o.count);
      s.touched[s.n_touched++] = slot;
    }
    e = o = PixelAccumulator{0.0, 0.0, 0.0, 0.0, kInf, kInf, {0.0, 0.0}};
  }
  if (bad) {
    for (int64_t j = 0; j < n; ++j) {
      int64_t slot;
      if (!label_slot(lab[j], a, slot)) {
        r.error = KernelError::LabelOutOfRange;
        r.bad_pixel = j;
        r.bad_label = static_cast<int64_t>(lab[j]);
        break;
      }
    }
  }
  return r;
}

inline void reset_touched(ChunkScratch& s) {
  for (int64_t t = 0; t < s.n_touched; ++t) acc_reset(s.acc[s.touched[t]]);
  s.n_touched = 0;
}

template <class Ops, class T, class L>
ChunkResult label_chunk(const LabelChunkArgs& a, ChunkScratch& s) {
  const T* x = static_cast<const T*>(a.saliency);
  const L* lab = static_cast<const L*>(a.labels);
  ChunkResult r = prefer_runs(lab, a.pixels) ? label_runs<Ops, false>(x, lab, a, s)
                  : s.lanes != nullptr       ? label_lanes<Ops>(x, lab, a, s)
                                             : label_scatter(x, lab, a, s);
  if (r.error != KernelError::None) return r;
  double sq = 0.0;
  for (int64_t t = 0; t < s.n_touched; ++t) {
    const Accumulator& acc = s.acc[s.touched[t]];
    r.pos += acc.pos;
    r.neg += acc.neg;
    sq += acc.sq;
  }
  // Sums of squares of finite float32 values cannot overflow a double, so a
  // non-finite total means a non-finite pixel, except for huge float64 values:
  // the scan below tells those apart.
  if (__builtin_isfinite(r.pos) && __builtin_isfinite(r.neg) && __builtin_isfinite(sq)) return r;
  const int64_t bad = first_nonfinite(x, a.pixels);
  if (bad < 0) return r;
  if (!a.skip_nonfinite) {
    r.error = KernelError::NonFinite;
    r.bad_pixel = bad;
    r.bad_value = static_cast<double>(x[bad]);
    return r;
  }
  reset_touched(s);
  r = label_runs<Ops, true>(x, lab, a, s);
  if (r.error != KernelError::None) return r;
  for (int64_t t = 0; t < s.n_touched; ++t) {
    r.pos += s.acc[s.touched[t]].pos;
    r.neg += s.acc[s.touched[t]].neg;
  }
  return r;
}

// Calls f(begin, end) for every run of set bits in words [w, w1) of a plane,
// in pixel order. Runs are cut at w1; f clamps them to the image. Whole words
// of zeros (outside runs) and of ones (inside runs) are skipped by
// Ops::find_word, several at a time.
template <class Ops, class F>
inline void for_each_bit_run(const uint64_t* plane, int64_t w, int64_t w1, F&& f) {
  constexpr uint64_t kOnes = ~uint64_t(0);
  uint64_t v = 0;  // word w with the bits already consumed cleared
  bool partial = false;
  for (;;) {
    if (!partial) {
      w = Ops::find_word(plane, w, w1, 0);
      if (w >= w1) return;
      v = plane[w];
    }
    const int b = __builtin_ctzll(v);
    const int64_t start = w * 64 + b;
    const uint64_t zeros = ~v & (kOnes << b);
    int e;
    if (zeros != 0) {
      e = __builtin_ctzll(zeros);
    } else {
      w = Ops::find_word(plane, w + 1, w1, kOnes);
      if (w >= w1) {
        f(start, w1 * 64);
        return;
      }
      v = plane[w];
      e = __builtin_ctzll(~v);
    }
    f(start, w * 64 + e);
    v &= kOnes << e;
    partial = v != 0;
    if (!partial) ++w;
  }
}

template <class Ops, bool Skip, class T>
inline void mask_segments(const T* x, const MaskChunkArgs& a, ChunkScratch& s) {
  const int64_t limit = a.image_pixels;
  for (int64_t k = 0; k < a.num_segments; ++k) {
    Accumulator& acc = s.acc[k];
    const int64_t first = a.bounds[2 * k] > a.word_begin ? a.bounds[2 * k] : a.word_begin;
    const int64_t last = a.bounds[2 * k + 1] < a.word_end ? a.bounds[2 * k + 1] : a.word_end;
    for_each_bit_run<Ops>(a.planes + k * a.words_per_mask, first, last,
                     [&](int64_t b, int64_t e) {
                       if (e > limit) e = limit;
                       if (b < e) add_range<Ops, Skip>(acc, x, b, e);
                     });
    if (acc.count > 0) s.touched[s.n_touched++] = k;
  }
  if (a.unassigned) {
    const int64_t nw = a.word_end - a.word_begin;
    for (int64_t w = 0; w < nw; ++w) s.words[w] = 0;
    for (int64_t k = 0; k < a.num_segments; ++k) {
      const uint64_t* plane = a.planes + k * a.words_per_mask + a.word_begin;
      for (int64_t w = 0; w < nw; ++w) s.words[w] |= plane[w];
    }
    for (int64_t w = 0; w < nw; ++w) s.words[w] = ~s.words[w];
    Accumulator& acc = s.acc[a.num_segments];
    const int64_t base = a.word_begin * 64;
    for_each_bit_run<Ops>(s.words, 0, nw, [&](int64_t b, int64_t e) {
      b += base;
      e += base;
      if (e > limit) e = limit;
      if (b < e) add_range<Ops, Skip>(acc, x, b, e);
    });
    if (acc.count > 0) s.touched[s.n_touched++] = a.num_segments;
  }
}

template <class Ops, class T>
ChunkResult mask_chunk(const MaskChunkArgs& a, ChunkScratch& s) {
  const T* x = static_cast<const T*>(a.saliency);
  const int64_t p0 = a.word_begin * 64;
  const int64_t p1 = a.word_end * 64 < a.image_pixels ? a.word_end * 64 : a.image_pixels;
  ChunkResult r;
  // The whole chunk once: the image totals, and it warms the cache for the
  // per-segment passes that follow.
  const RunStats all = Ops::reduce(x + p0, p1 - p0);
  bool skip = false;
  if (!(__builtin_isfinite(all.pos) && __builtin_isfinite(all.neg) && __builtin_isfinite(all.sq))) {
    const int64_t bad = first_nonfinite(x + p0, p1 - p0);
    if (bad >= 0) {
      if (!a.skip_nonfinite) {
        r.error = KernelError::NonFinite;
        r.bad_pixel = bad;
        r.bad_value = static_cast<double>(x[p0 + bad]);
        return r;
      }
      skip = true;
    }
  }
  if (!skip) {
    r.pos = all.pos;
    r.neg = all.neg;
    mask_segments<Ops, false>(x, a, s);
    return r;
  }
  Accumulator total;
  acc_reset(total);
  r.nonfinite = add_range<Ops, true>(total, x, p0, p1);
  r.pos = total.pos;
  r.neg = total.neg;
  mask_segments<Ops, true>(x, a, s);
  return r;
}

template <class Ops>
LeafTable make_leaf_table(const char* name) {
  LeafTable t{};
  t.labels[0][0] = &label_chunk<Ops, float, uint8_t>;
  t.labels[0][1] = &label_chunk<Ops, float, uint16_t>;
  t.labels[0][2] = &label_chunk<Ops, float, int32_t>;
  t.labels[1][0] = &label_chunk<Ops, double, uint8_t>;
  t.labels[1][1] = &label_chunk<Ops, double, uint16_t>;
  t.labels[1][2] = &label_chunk<Ops, double, int32_t>;
  t.masks[0] = &mask_chunk<Ops, float>;
  t.masks[1] = &mask_chunk<Ops, double>;
  t.pack_plane = &Ops::pack_plane;
  t.xor_sum = &Ops::xor_sum;
  t.name = name;
  return t;
}
