// The streams open at once over every front-end, counted in choices as the engine counts its
// slots: a request holds its share from acceptance until its last byte is produced, so a
// stream the engine has finished keeps counting while its client reads (its memory is still
// held), and stops counting before that client can see the end.
#pragma once

#include <cstdint>
#include <mutex>

namespace seqboat::server {

class Metrics;

class StreamCapacity {
 public:
  // `metrics` (may be null) gets the open count.
  StreamCapacity(int64_t limit, Metrics* metrics) : limit_(limit), metrics_(metrics) {}

  // Takes `choices` unless that would exceed the limit.
  bool TryAcquire(int64_t choices);
  void Release(int64_t choices);
  int64_t open() const;
  int64_t limit() const { return limit_; }

 private:
  const int64_t limit_;
  Metrics* const metrics_;
  mutable std::mutex mu_;
  int64_t open_ = 0;
};

}  // namespace seqboat::server
