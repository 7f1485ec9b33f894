// StreamCapacity: the shared count of open streams.
#include "server/stream_capacity.h"

#include "server/metrics.h"

namespace seqboat::server {

bool StreamCapacity::TryAcquire(int64_t choices) {
  std::lock_guard<std::mutex> lock(mu_);
  if (open_ + choices > limit_) return false;
  open_ += choices;
  if (metrics_ != nullptr) metrics_->SetOpenStreams(open_);
  return true;
}

void StreamCapacity::Release(int64_t choices) {
  std::lock_guard<std::mutex> lock(mu_);
  open_ -= choices;
  if (metrics_ != nullptr) metrics_->SetOpenStreams(open_);
}

int64_t StreamCapacity::open() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_;
}

}  // namespace seqboat::server
