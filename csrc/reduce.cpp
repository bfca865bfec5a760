// Orchestration: cuts a batch into (image, chunk) units, runs the leaf kernels
// on threads, and merges chunk results into the outputs in chunk order.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "leaf.hpp"
#include "threads.hpp"

namespace sat {

namespace {

constexpr double kInfinity = HUGE_VAL;

void identity(Accumulator& a) {
  a.pos = a.neg = a.sq = 0.0;
  a.min = kInfinity;
  a.max = -kInfinity;
  a.count = 0;
}

struct Entry {
  int64_t slot;
  Accumulator acc;
};

struct ChunkRecord {
  std::vector<Entry> entries;
  double pos = 0.0;
  double neg = 0.0;
  int64_t nonfinite = 0;
};

struct ThreadState {
  std::vector<Accumulator> acc, acc2;
  std::vector<int64_t> touched, touched2;
  std::vector<uint64_t> words;
  std::vector<PixelAccumulator> lanes;
  ChunkScratch scratch;
  KernelError error;

  // The second accumulator set only speeds up noisy label maps; for very large
  // vocabularies it would cost more memory than it saves time.
  static constexpr int64_t kMaxSlotsForSecondSet = 1 << 16;

  explicit ThreadState(int64_t slots)
      : acc(static_cast<size_t>(slots)),
        acc2(slots <= kMaxSlotsForSecondSet ? static_cast<size_t>(slots) : 0),
        touched(static_cast<size_t>(slots)),
        touched2(slots <= kMaxSlotsForSecondSet ? static_cast<size_t>(slots) : 0),
        words(static_cast<size_t>(kChunkPixels / 64)),
        lanes(slots + 1 <= kMaxLaneSlots ? static_cast<size_t>(2 * (slots + 1)) : 0) {
    for (auto& a : acc) identity(a);
    for (auto& a : acc2) identity(a);
    for (auto& l : lanes) l = PixelAccumulator{0.0, 0.0, 0.0, 0.0, kInfinity, kInfinity, {0.0, 0.0}};
    scratch.lanes = lanes.empty() ? nullptr : lanes.data();
    scratch.acc = acc.data();
    scratch.acc2 = acc2.empty() ? nullptr : acc2.data();
    scratch.touched = touched.data();
    scratch.touched2 = touched2.data();
    scratch.words = words.data();
  }
  ThreadState(const ThreadState&) = delete;
  ThreadState(ThreadState&& o) noexcept = default;

  void note_error(const ChunkResult& r, int64_t image, int64_t pixel0) {
    const int64_t pixel = pixel0 + r.bad_pixel;
    if (error.kind != KernelError::None &&
        (error.image < image || (error.image == image && error.pixel <= pixel)))
      return;
    error.kind = r.error;
    error.image = image;
    error.pixel = pixel;
    error.label = r.bad_label;
    error.value = r.bad_value;
  }
};

// Stores one chunk's slot statistics, then returns the scratch to identity.
void emit_direct(ChunkScratch& s, const StatsOutput& out, int64_t image) {
  const int64_t row = image * out.slots;
  for (int64_t t = 0; t < s.n_touched; ++t) {
    const int64_t slot = s.touched[t];
    Accumulator& a = s.acc[slot];
    const int64_t i = row + slot;
    out.count[i] = a.count;
    out.pos[i] = a.pos;
    out.neg[i] = a.neg;
    out.sq[i] = a.sq;
    out.min[i] = a.min;
    out.max[i] = a.max;
    identity(a);
  }
  s.n_touched = 0;
}

void emit_record(ChunkScratch& s, ChunkRecord& rec) {
  rec.entries.resize(static_cast<size_t>(s.n_touched));
  for (int64_t t = 0; t < s.n_touched; ++t) {
    const int64_t slot = s.touched[t];
    rec.entries[static_cast<size_t>(t)] = Entry{slot, s.acc[slot]};
    identity(s.acc[slot]);
  }
  s.n_touched = 0;
}

void discard(ChunkScratch& s) {
  for (int64_t t = 0; t < s.n_touched; ++t) identity(s.acc[s.touched[t]]);
  s.n_touched = 0;
}

// Merges the chunks of every multi-chunk image in chunk order.
void merge_records(const std::vector<ChunkRecord>& records, int64_t images, int64_t chunks,
                   const StatsOutput& out) {
  for (int64_t b = 0; b < images; ++b) {
    const int64_t row = b * out.slots;
    double pos = 0.0, neg = 0.0;
    int64_t nonfinite = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const ChunkRecord& rec = records[static_cast<size_t>(b * chunks + c)];
      pos += rec.pos;
      neg += rec.neg;
      nonfinite += rec.nonfinite;
      for (const Entry& e : rec.entries) {
        const int64_t i = row + e.slot;
        if (out.count[i] == 0) {
          out.min[i] = e.acc.min;
          out.max[i] = e.acc.max;
        } else {
          out.min[i] = out.min[i] < e.acc.min ? out.min[i] : e.acc.min;
          out.max[i] = out.max[i] > e.acc.max ? out.max[i] : e.acc.max;
        }
        out.count[i] += e.acc.count;
        out.pos[i] += e.acc.pos;
        out.neg[i] += e.acc.neg;
        out.sq[i] += e.acc.sq;
      }
    }
    out.total_pos[b] = pos;
    out.total_neg[b] = neg;
    out.nonfinite[b] = nonfinite;
  }
}

KernelError first_error(const std::vector<KernelError>& errors) {
  KernelError best;
  for (const KernelError& e : errors) {
    if (e.kind == KernelError::None) continue;
    if (best.kind == KernelError::None || e.image < best.image ||
        (e.image == best.image && e.pixel < best.pixel))
      best = e;
  }
  return best;
}

// Shared driver for both segment representations. `run_chunk(state, image,
// chunk, first_pixel)` reduces one unit into state.scratch.
template <class RunChunk>
KernelError drive(int64_t images, int64_t pixels, int64_t chunk_pixels, int threads,
                  const StatsOutput& out, RunChunk&& run_chunk) {
  if (images <= 0 || pixels <= 0) return KernelError{};
  const int64_t chunks = (pixels + chunk_pixels - 1) / chunk_pixels;
  const int64_t units = images * chunks;
  std::vector<ChunkRecord> records(chunks > 1 ? static_cast<size_t>(units) : 0);
  std::vector<KernelError> errors(static_cast<size_t>(std::max(threads, 1)));
  parallel_units(
      units, threads, [&](int tid) { return std::pair<int, ThreadState>(tid, ThreadState(out.slots)); },
      [&](std::pair<int, ThreadState>& st, int64_t unit) {
        ThreadState& ts = st.second;
        const int64_t b = unit / chunks;
        const int64_t c = unit % chunks;
        const int64_t p0 = c * chunk_pixels;
        const ChunkResult r = run_chunk(ts.scratch, b, p0, std::min(chunk_pixels, pixels - p0));
        if (r.error != KernelError::None) {
          discard(ts.scratch);
          ts.note_error(r, b, p0);
          errors[static_cast<size_t>(st.first)] = ts.error;
          return;
        }
        if (chunks == 1) {
          emit_direct(ts.scratch, out, b);
          out.total_pos[b] = r.pos;
          out.total_neg[b] = r.neg;
          out.nonfinite[b] = r.nonfinite;
        } else {
          ChunkRecord& rec = records[static_cast<size_t>(unit)];
          emit_record(ts.scratch, rec);
          rec.pos = r.pos;
          rec.neg = r.neg;
          rec.nonfinite = r.nonfinite;
        }
      });
  const KernelError err = first_error(errors);
  if (err.kind != KernelError::None) return err;
  if (chunks > 1) merge_records(records, images, chunks, out);
  return KernelError{};
}

size_t saliency_size(SaliencyType t) { return t == SaliencyType::F32 ? 4 : 8; }
size_t label_size(LabelType t) { return t == LabelType::U8 ? 1 : (t == LabelType::U16 ? 2 : 4); }

}  // namespace

KernelError reduce_labels(const LabelsInput& in, const StatsOutput& out) {
  const LabelChunkFn fn = leaf_table().labels[static_cast<int>(in.saliency_type)][static_cast<int>(in.label_type)];
  const size_t xs = saliency_size(in.saliency_type);
  const size_t ls = label_size(in.label_type);
  const char* x = static_cast<const char*>(in.saliency);
  const char* lab = static_cast<const char*>(in.labels);
  return drive(in.images, in.pixels, kChunkPixels, in.threads, out,
               [&](ChunkScratch& s, int64_t b, int64_t p0, int64_t n) {
                 const size_t offset = static_cast<size_t>(b * in.pixels + p0);
                 LabelChunkArgs args{x + offset * xs, lab + offset * ls, n, in.num_segments,
                                     in.has_ignore, in.ignore_index, in.skip_nonfinite};
                 return fn(args, s);
               });
}

KernelError reduce_masks(const MasksInput& in, const StatsOutput& out) {
  const MaskChunkFn fn = leaf_table().masks[static_cast<int>(in.saliency_type)];
  const size_t xs = saliency_size(in.saliency_type);
  const char* x = static_cast<const char*>(in.saliency);
  return drive(in.images, in.pixels, kChunkPixels, in.threads, out,
               [&](ChunkScratch& s, int64_t b, int64_t p0, int64_t n) {
                 MaskChunkArgs args{x + static_cast<size_t>(b * in.pixels) * xs,
                                    in.words + static_cast<size_t>(b * in.num_segments * in.words_per_mask),
                                    in.bounds + static_cast<size_t>(b * in.num_segments * 2),
                                    in.num_segments,
                                    in.words_per_mask,
                                    in.pixels,
                                    p0 / 64,
                                    (p0 + n + 63) / 64,
                                    in.unassigned,
                                    in.skip_nonfinite};
                 return fn(args, s);
               });
}

void pack_masks(const uint8_t* masks, int64_t planes, int64_t pixels, uint64_t* words, int64_t* bounds, int threads) {
  const int64_t nw = (pixels + 63) / 64;
  const PackPlaneFn fn = leaf_table().pack_plane;
  parallel_units(
      planes, threads, [](int) { return 0; },
      [&](int, int64_t p) {
        uint64_t* plane = words + static_cast<size_t>(p * nw);
        fn(masks + static_cast<size_t>(p * pixels), pixels, plane);
        int64_t first = 0, last = nw;
        while (first < nw && plane[first] == 0) ++first;
        while (last > first && plane[last - 1] == 0) --last;
        if (first == last) first = last = 0;
        bounds[2 * p] = first;
        bounds[2 * p + 1] = last;
      });
}

uint64_t read_probe(const uint8_t* data, int64_t bytes, int threads) {
  const int n = std::max(threads, 1);
  const int64_t part = (bytes + n - 1) / n;
  std::vector<uint64_t> partial(static_cast<size_t>(n), 0);
  const XorSumFn fn = leaf_table().xor_sum;
  parallel_units(
      n, n, [](int) { return 0; },
      [&](int, int64_t t) {
        const int64_t b = t * part;
        const int64_t e = std::min(bytes, b + part);
        if (b < e) partial[static_cast<size_t>(t)] = fn(data + b, e - b);
      });
  uint64_t r = 0;
  for (uint64_t v : partial) r ^= v;
  return r;
}

}  // namespace sat
