#include "chunked.hpp"

#include "slot_map.hpp"

namespace sat {
namespace chunked {

ScratchSize label_scratch(int64_t num_segments, int64_t pixels, SaliencyType saliency) {
  const int64_t slots = num_segments + 1;
  ScratchSize size;
  size.second_set = true;
  size.extremes = saliency == SaliencyType::F32;
  if (slots <= kMaxDirectSlots) {
    size.accumulators = slots;
    size.lanes = slots + 1 <= kMaxLaneSlots;
  } else {
    // A chunk of n pixels touches at most n slots.
    size.compact = true;
    size.accumulators = std::min(slots, std::min(pixels, kChunkPixels));
  }
  return size;
}

ThreadState::ThreadState(const ScratchSize& size) {
  const size_t n = static_cast<size_t>(size.accumulators);
  acc_.assign(n, acc_identity());
  touched_.resize(n);
  if (size.second_set) {
    acc2_.assign(n, acc_identity());
    if (!size.compact) touched2_.resize(n);
  }
  if (size.words) words_.resize(static_cast<size_t>(kChunkPixels / 64));
  // Set by the kernel when a chunk first touches the accumulator.
  if (size.extremes) extremes_.resize(n);
  // The lanes' stride is K + 2: the K + 1 slots and a trap slot for bad labels.
  if (size.lanes) {
    lanes_.resize(static_cast<size_t>(kLaneSets) * (n + 1));
    for (auto& l : lanes_) acc_reset(l);
  }
  if (size.compact) {
    size_t cells = 1;
    while (cells < 2 * n) cells *= 2;  // load factor at most 1/2
    map_keys_.assign(cells, -1);
    map_vals_.resize(cells);
    map_cell_.resize(n);
    scratch.map_keys = map_keys_.data();
    scratch.map_vals = map_vals_.data();
    scratch.map_cell = map_cell_.data();
    scratch.map_mask = cells - 1;
  }
  scratch.lanes = lanes_.empty() ? nullptr : lanes_.data();
  scratch.extremes = extremes_.empty() ? nullptr : extremes_.data();
  scratch.acc = acc_.data();
  scratch.acc2 = acc2_.empty() ? nullptr : acc2_.data();
  scratch.touched = touched_.data();
  scratch.touched2 = touched2_.empty() ? nullptr : touched2_.data();
  scratch.words = words_.empty() ? nullptr : words_.data();
}

void ThreadState::note_error(const ChunkResult& r, int64_t image, int64_t pixel0, const Geometry& g) {
  const int64_t pixel = pixel0 + r.bad_pixel;
  const int64_t row = g.width > 0 ? pixel / g.width : 0;
  const int64_t col = g.width > 0 ? pixel % g.width : 0;
  const Error e = r.error == ErrorKind::label
                      ? label_error(image, row, col, static_cast<int64_t>(r.bad_value), g.num_segments)
                      : nonfinite_error(image, row, col, r.bad_value);
  if (e.before(error)) error = e;
}

void emit_direct(ChunkScratch& s, const StatsOutput& out, int64_t image) {
  const int64_t row = image * out.slots;
  for (int64_t t = 0; t < s.n_touched; ++t) acc_store(touched_acc(s, t), out, row + s.touched[t]);
  reset_touched(s);
}

void emit_record(ChunkScratch& s, ChunkRecord& rec) {
  rec.entries.resize(static_cast<size_t>(s.n_touched));
  for (int64_t t = 0; t < s.n_touched; ++t)
    rec.entries[static_cast<size_t>(t)] = Entry{s.touched[t], touched_acc(s, t)};
  reset_touched(s);
}

void discard(ChunkScratch& s) { reset_touched(s); }

void merge_records(const std::vector<ChunkRecord>& records, int64_t images, int64_t chunks, const StatsOutput& out) {
  for (int64_t b = 0; b < images; ++b) {
    const int64_t row = b * out.slots;
    double pos = 0.0, neg = 0.0;
    int64_t nonfinite = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const ChunkRecord& rec = records[static_cast<size_t>(b * chunks + c)];
      pos += rec.pos;
      neg += rec.neg;
      nonfinite += rec.nonfinite;
      for (const Entry& e : rec.entries) acc_store_merge(e.acc, out, row + e.slot);
    }
    out.total_pos[b] = pos;
    out.total_neg[b] = neg;
    out.nonfinite[b] = nonfinite;
  }
}

}  // namespace chunked
}  // namespace sat
