#include "chunked.hpp"

namespace sat {
namespace chunked {

namespace {
// The second accumulator set only speeds up noisy label maps; for very large
// vocabularies it would cost more memory than it saves time.
constexpr int64_t kMaxSlotsForSecondSet = 1 << 16;
}  // namespace

ThreadState::ThreadState(int64_t slots)
    : acc_(static_cast<size_t>(slots), acc_identity()),
      acc2_(slots <= kMaxSlotsForSecondSet ? static_cast<size_t>(slots) : 0, acc_identity()),
      touched_(static_cast<size_t>(slots)),
      touched2_(slots <= kMaxSlotsForSecondSet ? static_cast<size_t>(slots) : 0),
      words_(static_cast<size_t>(kChunkPixels / 64)),
      lanes_(slots + 1 <= kMaxLaneSlots ? static_cast<size_t>(2 * (slots + 1)) : 0) {
  for (auto& l : lanes_) acc_reset(l);
  scratch.lanes = lanes_.empty() ? nullptr : lanes_.data();
  scratch.acc = acc_.data();
  scratch.acc2 = acc2_.empty() ? nullptr : acc2_.data();
  scratch.touched = touched_.data();
  scratch.touched2 = touched2_.data();
  scratch.words = words_.data();
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
  for (int64_t t = 0; t < s.n_touched; ++t) {
    const int64_t slot = s.touched[t];
    acc_store(s.acc[slot], out, row + slot);
    acc_reset(s.acc[slot]);
  }
  s.n_touched = 0;
}

void emit_record(ChunkScratch& s, ChunkRecord& rec) {
  rec.entries.resize(static_cast<size_t>(s.n_touched));
  for (int64_t t = 0; t < s.n_touched; ++t) {
    const int64_t slot = s.touched[t];
    rec.entries[static_cast<size_t>(t)] = Entry{slot, s.acc[slot]};
    acc_reset(s.acc[slot]);
  }
  s.n_touched = 0;
}

void discard(ChunkScratch& s) {
  for (int64_t t = 0; t < s.n_touched; ++t) acc_reset(s.acc[s.touched[t]]);
  s.n_touched = 0;
}

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
