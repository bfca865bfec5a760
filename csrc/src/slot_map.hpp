// Where a chunk's per-slot accumulators live (see ChunkScratch in
// sat/dispatch.hpp): acc[slot] in direct scratch, acc[i] for the i-th slot
// the chunk touched in compact scratch. Both give each slot the same
// accumulator updates in the same order, so the statistics of a slot do not
// depend on which scratch a call uses. Private to the kernels; inline code,
// so in the SAT_ISA namespace (see sat/accumulator.hpp).
#pragma once
#include <cstdint>

#include "sat/accumulator.hpp"
#include "sat/dispatch.hpp"

namespace sat {
inline namespace SAT_ISA {

inline bool is_compact(const ChunkScratch& s) { return s.map_keys != nullptr; }

// The accumulator of the t-th touched slot.
inline Accumulator& touched_acc(ChunkScratch& s, int64_t t) { return is_compact(s) ? s.acc[t] : s.acc[s.touched[t]]; }

// The index into acc (and acc2) of `slot` for this chunk. Registers the slot
// in `touched` when the chunk has not touched it yet; in direct scratch that
// is "its accumulator is still empty", so call it right before adding to it.
inline int64_t slot_index(ChunkScratch& s, int64_t slot) {
  if (!is_compact(s)) {
    if (s.acc[slot].count == 0) s.touched[s.n_touched++] = slot;
    return slot;
  }
  uint64_t c = (static_cast<uint64_t>(slot) * 0x9E3779B97F4A7C15ull >> 40) & s.map_mask;
  for (;;) {
    const int32_t key = s.map_keys[c];
    if (key == static_cast<int32_t>(slot)) return s.map_vals[c];
    if (key < 0) break;
    c = (c + 1) & s.map_mask;
  }
  const int64_t i = s.n_touched++;
  s.map_keys[c] = static_cast<int32_t>(slot);
  s.map_vals[c] = static_cast<int32_t>(i);
  s.map_cell[i] = static_cast<int32_t>(c);
  s.touched[i] = slot;
  return i;
}

// Forgets the slot touched last (its accumulator must be empty). Linear
// probing allows removing the newest key by emptying its cell: no other key's
// probe sequence went past a cell that was empty when that key was inserted.
inline void forget_last(ChunkScratch& s) {
  --s.n_touched;
  if (is_compact(s)) s.map_keys[s.map_cell[s.n_touched]] = -1;
}

// Returns every touched accumulator (and the map) to identity.
inline void reset_touched(ChunkScratch& s) {
  for (int64_t t = 0; t < s.n_touched; ++t) {
    acc_reset(touched_acc(s, t));
    if (is_compact(s)) s.map_keys[s.map_cell[t]] = -1;
  }
  s.n_touched = 0;
}

}  // namespace SAT_ISA
}  // namespace sat
