// Orchestration shared by the label and the mask kernels: cuts a batch into
// (image, chunk) units, runs the chosen leaf kernel on threads, and merges
// chunk results into the outputs in chunk order. The chunk grid depends only
// on the image size, so the results are bitwise identical for any number of
// threads. Private to labels.cpp and masks.cpp.
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "sat/accumulator.hpp"
#include "sat/dispatch.hpp"
#include "sat/error.hpp"
#include "sat/threads.hpp"

namespace sat {
namespace chunked {

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

// Where an error's pixel is, for a batch of images `width` pixels wide.
struct Geometry {
  int64_t width;
  int64_t num_segments;  // for the label error's message
};

// What one thread's ChunkScratch holds (see sat/dispatch.hpp).
struct ScratchSize {
  int64_t accumulators = 0;  // direct: every slot (K + 1); compact: the most slots one chunk can touch
  bool compact = false;      // index through the slot map
  bool second_set = false;   // acc2 (and touched2 when direct)
  bool lanes = false;        // kLaneSets * (K + 2) PixelAccumulators for noisy label maps
  bool words = false;        // the unassigned-pixel mask of a chunk (masks)
  bool extremes = false;     // ExtremeLanes per accumulator (label runs over float32)
};

// The scratch of the label kernels for K segments and images of `pixels`
// pixels: direct up to kMaxDirectSlots slots, compact beyond. At most about
// 14 MB a thread whatever K is (65,536 slots of 2 accumulators and their
// extreme lanes, their lists and the map).
ScratchSize label_scratch(int64_t num_segments, int64_t pixels, SaliencyType saliency);

class ThreadState {
 public:
  explicit ThreadState(const ScratchSize& size);
  ThreadState(const ThreadState&) = delete;
  ThreadState(ThreadState&& o) noexcept = default;

  ChunkScratch scratch;
  Error error;  // the first error this thread met

  // Records a failed chunk of `image` starting at pixel `pixel0`.
  void note_error(const ChunkResult& r, int64_t image, int64_t pixel0, const Geometry& g);

 private:
  std::vector<Accumulator> acc_, acc2_;
  std::vector<int64_t> touched_, touched2_;
  std::vector<uint64_t> words_;
  std::vector<PixelAccumulator> lanes_;
  std::vector<ExtremeLanes> extremes_;
  std::vector<int32_t> map_keys_, map_vals_, map_cell_;
};

// Stores one chunk's slot statistics, then returns the scratch to identity.
void emit_direct(ChunkScratch& s, const StatsOutput& out, int64_t image);
void emit_record(ChunkScratch& s, ChunkRecord& rec);
void discard(ChunkScratch& s);
// Merges the chunks of every multi-chunk image in chunk order.
void merge_records(const std::vector<ChunkRecord>& records, int64_t images, int64_t chunks, const StatsOutput& out);

// `run_chunk(scratch, image, first_pixel, pixels)` reduces one unit into the
// scratch. Returns the first error in (image, row, col) order.
template <class RunChunk>
Error drive(int64_t images, int64_t pixels, const Geometry& g, const ScratchSize& size, int threads,
            const StatsOutput& out, RunChunk&& run_chunk) {
  if (images <= 0 || pixels <= 0) return Error{};
  const int64_t chunks = (pixels + kChunkPixels - 1) / kChunkPixels;
  const int64_t units = images * chunks;
  std::vector<ChunkRecord> records(chunks > 1 ? static_cast<size_t>(units) : 0);
  // parallel_units never starts more threads than units: size per-thread state likewise.
  threads = static_cast<int>(std::min<int64_t>(std::max(threads, 1), units));
  std::vector<Error> errors(static_cast<size_t>(threads));
  parallel_units(
      units, threads, [&](int tid) { return std::pair<int, ThreadState>(tid, ThreadState(size)); },
      [&](std::pair<int, ThreadState>& st, int64_t unit) {
        ThreadState& ts = st.second;
        const int64_t b = unit / chunks;
        const int64_t c = unit % chunks;
        const int64_t p0 = c * kChunkPixels;
        const ChunkResult r = run_chunk(ts.scratch, b, p0, std::min(kChunkPixels, pixels - p0));
        if (r.error != ErrorKind::none) {
          discard(ts.scratch);
          ts.note_error(r, b, p0, g);
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
  Error first;
  for (const Error& e : errors)
    if (e.before(first)) first = e;
  if (first) return first;
  if (chunks > 1) merge_records(records, images, chunks, out);
  return Error{};
}

inline size_t saliency_size(SaliencyType t) { return t == SaliencyType::F32 ? 4 : 8; }

}  // namespace chunked
}  // namespace sat
