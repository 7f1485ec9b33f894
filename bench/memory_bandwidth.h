// Streaming-read memory bandwidth of this machine: the denominator of the benchmark's roofline.
#pragma once

#include <cstddef>

namespace seqboat::bench {

struct ReadBandwidth {
  double single_thread = 0.0;  // bytes per second
  double all_threads = 0.0;
};

// Bytes per second of summing the floats of one `bytes`-sized buffer (sized well beyond the
// caches), by one thread and split over `threads` threads; each the best of `passes` passes
// after one untimed pass.
ReadBandwidth MeasureReadBandwidth(size_t bytes, int threads, int passes);

}  // namespace seqboat::bench
