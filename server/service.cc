#include "server/service.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/stop_filter.h"

namespace seqboat::server {

namespace v1 = ::seqboat::v1;

struct SeqBoatService::Shared {
  Engine* engine;
  const Tokenizer* tokenizer;
  ModelConfig config;
  v1::ModelInfo info;
  ServiceLimits limits;
  std::vector<std::string> api_keys;
  Metrics* metrics;
  std::mutex seed_mu;
  std::mt19937_64 seed_rng{std::random_device{}()};
  std::atomic<uint64_t> next_request{1};

  uint64_t DrawSeed() {
    std::lock_guard<std::mutex> lock(seed_mu);
    return seed_rng();
  }
};

namespace {

grpc::Status ToGrpc(const absl::Status& status) {
  // absl::StatusCode and grpc::StatusCode share their numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::DATA_LOSS: return "DATA_LOSS";
    case grpc::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

grpc::Status Authorize(const std::vector<std::string>& keys, const grpc::CallbackServerContext& context) {
  if (keys.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::UNAUTHENTICATED, "missing metadata `authorization: Bearer <api key>`");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (value.substr(0, kBearer.size()) != kBearer) {
    return grpc::Status(grpc::UNAUTHENTICATED, "metadata `authorization` must be `Bearer <api key>`");
  }
  const absl::string_view key = value.substr(kBearer.size());
  bool known = false;
  for (const std::string& candidate : keys) known |= ConstantTimeEquals(key, candidate);
  if (!known) return grpc::Status(grpc::UNAUTHENTICATED, "unknown api key");
  return grpc::Status::OK;
}

// Length of the valid UTF-8 sequence at bytes[i], or 0 (overlong forms, surrogates and
// code points above U+10FFFF are invalid).
size_t Utf8SequenceLength(absl::string_view bytes, size_t i) {
  const unsigned char c = bytes[i];
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > bytes.size()) return 0;
  const unsigned char c1 = bytes[i + 1];
  if (c1 < lo || c1 > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    const unsigned char ck = bytes[i + k];
    if (ck < 0x80 || ck > 0xBF) return 0;
  }
  return n;
}

bool IsValidUtf8(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = Utf8SequenceLength(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP_SEQUENCE;
    case FinishReason::kStopToken: return v1::FINISH_REASON_STOP_TOKEN;
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kDeadline: return v1::FINISH_REASON_DEADLINE;
    case FinishReason::kError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// One Generate call. The engine thread calls HandleToken/HandleFinish through CallSink; gRPC
// calls the reactions. Every decision is made under mu_; StartWrite and Finish are called
// after unlocking. Two references keep `this` alive: gRPC's (dropped in OnDone) and, once
// the request is submitted, the engine's (dropped at the end of HandleFinish), so that the
// engine thread may still be inside HandleFinish when gRPC is already done with the call.
class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateCall(std::shared_ptr<SeqBoatService::Shared> shared, grpc::CallbackServerContext* context)
      : shared_(std::move(shared)), context_(context), detokenizer_(*shared_->tokenizer) {}

  void Start(const v1::GenerateRequest& request, bool accepting);

  bool HandleToken(const GeneratedToken& token);
  void HandleFinish(const FinishInfo& info);

  void OnWriteDone(bool ok) override {
    std::shared_ptr<RequestHandle> handle;
    Action action;
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_in_flight_ = false;
      if (!ok) stream_broken_ = true;
      handle = handle_;
      action = DecideLocked();
    }
    if (!ok && handle != nullptr) handle->Cancel();  // the client is gone
    Execute(action);
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      client_cancelled_ = true;
    }
    CancelEngine();
  }

  void OnDone() override { Unref(); }

 private:
  void Reject(const grpc::Status& status) {
    if (shared_->metrics != nullptr) shared_->metrics->RecordRequest(CodeName(status.error_code()));
    Finish(status);
  }
  void CancelEngine() {
    std::shared_ptr<RequestHandle> handle;
    {
      std::lock_guard<std::mutex> lock(mu_);
      handle = handle_;
    }
    if (handle != nullptr) handle->Cancel();
  }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  enum class Action { kNothing, kWrite, kFinish };
  void MoveReleasedLocked();
  Action DecideLocked();    // with mu_ held: the next write or the finish, claimed
  void Execute(Action action);  // without mu_; kFinish may delete `this`
  void Pump();

  const std::shared_ptr<SeqBoatService::Shared> shared_;
  grpc::CallbackServerContext* const context_;
  std::atomic<int> refs_{1};  // gRPC's, plus the engine's while it holds the request
  std::string request_id_;
  bool want_logprobs_ = false;
  bool want_activations_ = false;

  std::mutex mu_;
  std::shared_ptr<RequestHandle> handle_;
  StreamingDetokenizer detokenizer_;
  std::unique_ptr<StopFilter> stop_filter_;
  std::vector<GeneratedToken> tokens_;  // every token so far, by index
  v1::GenerateResponse pending_;        // released, not yet written
  v1::GenerateResponse final_;          // the `finish` message, once the engine is done
  v1::GenerateResponse writing_;        // owned by the write in flight
  uint64_t seed_ = 0;
  bool write_in_flight_ = false;
  bool engine_done_ = false;
  bool final_sent_ = false;
  bool finish_called_ = false;
  bool stream_broken_ = false;
  bool client_cancelled_ = false;
  grpc::Status final_status_;
};

class CallSink final : public RequestSink {
 public:
  explicit CallSink(GenerateCall* call) : call_(call) {}
  bool OnToken(const GeneratedToken& token) override { return call_->HandleToken(token); }
  void OnFinish(const FinishInfo& info) override { call_->HandleFinish(info); }

 private:
  GenerateCall* const call_;
};

void GenerateCall::Start(const v1::GenerateRequest& request, bool accepting) {
  SeqBoatService::Shared& shared = *shared_;
  grpc::Status auth = Authorize(shared.api_keys, *context_);
  if (!auth.ok()) return Reject(auth);
  if (!accepting) return Reject(grpc::Status(grpc::UNAVAILABLE, "the server is shutting down"));

  request_id_ = request.request_id().empty() ? absl::StrFormat("req-%d", shared.next_request.fetch_add(1))
                                             : request.request_id();
  GenerationParams params;
  std::vector<std::string> stops;
  seed_ = request.sampling().has_seed() ? request.sampling().seed() : shared.DrawSeed();
  absl::Status valid = BuildGenerationParams(request, *shared.tokenizer, shared.config, shared.limits, seed_, &params,
                                             &stops);
  if (!valid.ok()) return Reject(ToGrpc(valid));
  const auto deadline = context_->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    params.deadline = absl::FromChrono(deadline) - shared.limits.deadline_margin;
  }
  want_logprobs_ = params.top_logprobs > 0;
  want_activations_ = params.return_activations;
  stop_filter_ = std::make_unique<StopFilter>(std::move(stops));

  refs_.fetch_add(1, std::memory_order_relaxed);  // the engine's, dropped by HandleFinish
  absl::StatusOr<std::shared_ptr<RequestHandle>> handle =
      shared.engine->Submit(std::move(params), std::make_shared<CallSink>(this));
  if (!handle.ok()) {
    refs_.fetch_sub(1, std::memory_order_relaxed);  // never submitted; gRPC's ref remains
    return Reject(ToGrpc(handle.status()));
  }
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    handle_ = *handle;
    cancelled = client_cancelled_;
  }
  if (cancelled) (*handle)->Cancel();
}

void GenerateCall::MoveReleasedLocked() {
  pending_.mutable_text()->append(stop_filter_->TakeText());
  for (int64_t index : stop_filter_->TakeTokens()) {
    if (index < 0) continue;
    const GeneratedToken& token = tokens_[index];
    pending_.add_token_ids(token.token);
    if (want_logprobs_) {
      v1::TokenLogprobs* logprobs = pending_.add_logprobs();
      logprobs->set_token_id(token.token);
      logprobs->set_logprob(token.logprob);
      for (const TokenLogprob& alternative : token.top) {
        v1::Alternative* top = logprobs->add_top();
        top->set_token_id(alternative.token);
        top->set_logprob(alternative.logprob);
        top->set_text(EscapeInvalidUtf8(shared_->tokenizer->TokenText(alternative.token)));
      }
    }
    if (want_activations_) {
      v1::TokenActivations* activations = pending_.add_activations();
      for (uint8_t on : token.activations) activations->add_layers(on != 0);
    }
  }
}

bool GenerateCall::HandleToken(const GeneratedToken& token) {
  bool stopped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t index = static_cast<int64_t>(tokens_.size());
    tokens_.push_back(token);
    stopped = stop_filter_->Append(index, detokenizer_.Push(token.token));
    MoveReleasedLocked();
  }
  Pump();
  return !stopped;
}

void GenerateCall::HandleFinish(const FinishInfo& info) {
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (info.reason != FinishReason::kStop) {
      const std::string tail = detokenizer_.Flush();
      if (!tail.empty()) stop_filter_->Append(-1, tail);
      stop_filter_->Flush();
    }
    MoveReleasedLocked();
    v1::FinishInfo* finish = final_.mutable_finish();
    finish->set_reason(ToProto(info.reason));
    finish->set_error(info.error);
    finish->set_stop_sequence(stop_filter_->matched_sequence());
    finish->set_prompt_tokens(info.prompt_tokens);
    finish->set_cached_prompt_tokens(info.cached_prompt_tokens);
    finish->set_generated_tokens(info.generated_tokens);
    finish->set_queue_seconds(absl::ToDoubleSeconds(info.queue_time));
    finish->set_time_to_first_token_seconds(absl::ToDoubleSeconds(info.time_to_first_token));
    finish->set_total_seconds(absl::ToDoubleSeconds(info.total_time));
    finish->set_seed(seed_);
    if (info.reason == FinishReason::kError) {
      final_status_ = grpc::Status(grpc::INTERNAL, info.error);
    } else if (client_cancelled_ || stream_broken_) {
      const bool expired = std::chrono::system_clock::now() >= context_->deadline();
      final_status_ = expired ? grpc::Status(grpc::DEADLINE_EXCEEDED, "deadline exceeded")
                              : grpc::Status(grpc::CANCELLED, "cancelled by the client");
    }
    engine_done_ = true;
    action = DecideLocked();
  }
  Execute(action);
  Unref();  // the engine is done with this call
}

GenerateCall::Action GenerateCall::DecideLocked() {
  if (finish_called_ || write_in_flight_) return Action::kNothing;
  const bool has_chunk = !pending_.text().empty() || pending_.token_ids_size() > 0;
  if (!stream_broken_ && !client_cancelled_ && has_chunk) {
    writing_.Clear();
    writing_.Swap(&pending_);
    writing_.set_request_id(request_id_);
    write_in_flight_ = true;
    return Action::kWrite;
  }
  if (engine_done_ && !final_sent_ && !stream_broken_ && !client_cancelled_) {
    writing_.Clear();
    writing_.Swap(&final_);
    writing_.set_request_id(request_id_);
    final_sent_ = true;
    write_in_flight_ = true;
    return Action::kWrite;
  }
  if (engine_done_) {
    finish_called_ = true;
    return Action::kFinish;
  }
  return Action::kNothing;
}

void GenerateCall::Execute(Action action) {  // the caller holds a reference
  if (action == Action::kWrite) {
    StartWrite(&writing_);
  } else if (action == Action::kFinish) {
    // final_status_ is no longer written once finish_called_ is set.
    const grpc::Status status = final_status_;
    if (shared_->metrics != nullptr) shared_->metrics->RecordRequest(CodeName(status.error_code()));
    Finish(status);
  }
}

void GenerateCall::Pump() {
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    action = DecideLocked();
  }
  Execute(action);
}

}  // namespace

std::string EscapeInvalidUtf8(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const size_t n = Utf8SequenceLength(bytes, i);
    if (n == 0) {
      absl::StrAppendFormat(&out, "\\x%02X", static_cast<unsigned char>(bytes[i]));
      ++i;
    } else {
      out.append(bytes, i, n);
      i += n;
    }
  }
  return out;
}

absl::Status BuildGenerationParams(const v1::GenerateRequest& request, const Tokenizer& tokenizer,
                                   const ModelConfig& config, const ServiceLimits& limits, uint64_t seed,
                                   GenerationParams* params, std::vector<std::string>* stop_sequences) {
  const int V = config.vocab_size;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (request.text().empty()) return absl::InvalidArgumentError("text: empty; give a prompt");
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(request.text());
      if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()));
      params->prompt.reserve(ids->size() + 1);
      params->prompt.push_back(kEosId);  // fairseq's start token
      params->prompt.insert(params->prompt.end(), ids->begin(), ids->end());
      break;
    }
    case v1::GenerateRequest::kTokens: {
      const auto& ids = request.tokens().ids();
      if (ids.empty()) return absl::InvalidArgumentError("tokens.ids: empty; give at least one token id");
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= V) {
          return absl::InvalidArgumentError(
              absl::StrCat("tokens.ids[", i, "]: id ", ids[i], " is outside the vocabulary 0..", V - 1));
        }
        if (ids[i] == kPadId) {
          return absl::InvalidArgumentError(absl::StrCat("tokens.ids[", i, "]: the padding id ", kPadId,
                                                         " is not a token a prompt may hold"));
        }
      }
      params->prompt.assign(ids.begin(), ids.end());
      break;
    }
    default:
      return absl::InvalidArgumentError("prompt: set `text` or `tokens`");
  }

  const v1::SamplingParams& sampling = request.sampling();
  SamplingParams& s = params->sampling;
  s.temperature = sampling.has_temperature() ? sampling.temperature() : 1.0f;
  s.top_k = sampling.top_k();
  s.top_p = sampling.has_top_p() ? sampling.top_p() : 1.0f;
  s.min_p = sampling.min_p();
  s.repetition_penalty = sampling.has_repetition_penalty() ? sampling.repetition_penalty() : 1.0f;
  s.presence_penalty = sampling.presence_penalty();
  s.frequency_penalty = sampling.frequency_penalty();
  s.seed = seed;

  const v1::StoppingParams& stopping = request.stopping();
  for (int i = 0; i < stopping.stop_token_ids_size(); ++i) {
    const int32_t id = stopping.stop_token_ids(i);
    if (id < 0 || id >= V) {
      return absl::InvalidArgumentError(
          absl::StrCat("stopping.stop_token_ids[", i, "]: id ", id, " is outside the vocabulary 0..", V - 1));
    }
    s.stop_token_ids.push_back(id);
  }
  absl::Status sampling_ok = ValidateSamplingParams(s, V);
  if (!sampling_ok.ok()) return absl::InvalidArgumentError(absl::StrCat("sampling.", sampling_ok.message()));

  if (stopping.has_max_new_tokens()) {
    params->max_new_tokens = stopping.max_new_tokens();
  } else {
    params->max_new_tokens = limits.default_max_new_tokens;
  }
  if (stopping.stop_size() > limits.max_stop_sequences) {
    return absl::InvalidArgumentError(absl::StrCat("stopping.stop: ", stopping.stop_size(),
                                                   " stop sequences; at most ", limits.max_stop_sequences));
  }
  for (int i = 0; i < stopping.stop_size(); ++i) {
    const std::string& stop = stopping.stop(i);
    if (stop.empty() || static_cast<int>(stop.size()) > limits.max_stop_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("stopping.stop[", i, "]: ", stop.size(), " bytes; expected 1..",
                                                     limits.max_stop_bytes));
    }
    if (!IsValidUtf8(stop)) {
      return absl::InvalidArgumentError(absl::StrCat("stopping.stop[", i, "]: not valid UTF-8"));
    }
    stop_sequences->push_back(stop);
  }
  params->ignore_eos = stopping.ignore_eos();
  if (request.logprobs() < 0 || request.logprobs() > limits.max_logprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs: ", request.logprobs(), " is outside 0..", limits.max_logprobs));
  }
  params->top_logprobs = request.logprobs();
  params->return_activations = request.return_activations();
  if (request.request_id().size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id: ", request.request_id().size(), " bytes; at most 256"));
  }
  return absl::OkStatus();
}

SeqBoatService::SeqBoatService(Engine* engine, const Tokenizer* tokenizer, const ModelConfig& config,
                               v1::ModelInfo info, const ServiceLimits& limits, std::vector<std::string> api_keys,
                               Metrics* metrics)
    : shared_(std::make_shared<Shared>()) {
  shared_->engine = engine;
  shared_->tokenizer = tokenizer;
  shared_->config = config;
  shared_->info = std::move(info);
  shared_->limits = limits;
  shared_->api_keys = std::move(api_keys);
  shared_->metrics = metrics;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* SeqBoatService::Generate(grpc::CallbackServerContext* context,
                                                                         const v1::GenerateRequest* request) {
  auto* call = new GenerateCall(shared_, context);
  call->Start(*request, accepting_.load());
  return call;
}

grpc::ServerUnaryReactor* SeqBoatService::Tokenize(grpc::CallbackServerContext* context,
                                                   const v1::TokenizeRequest* request,
                                                   v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::Status status = Authorize(shared_->api_keys, *context);
  if (status.ok()) {
    absl::StatusOr<std::vector<int32_t>> ids = shared_->tokenizer->Encode(request->text());
    if (!ids.ok()) {
      status = grpc::Status(grpc::INVALID_ARGUMENT, absl::StrCat("text: ", ids.status().message()));
    } else {
      ids->insert(ids->begin(), kEosId);
      for (int32_t id : *ids) {
        response->add_token_ids(id);
        response->add_pieces(EscapeInvalidUtf8(shared_->tokenizer->TokenText(id)));
      }
    }
  }
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* SeqBoatService::GetModelInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetModelInfoRequest* request,
                                                       v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::Status status = Authorize(shared_->api_keys, *context);
  if (status.ok()) *response = shared_->info;
  reactor->Finish(status);
  return reactor;
}

}  // namespace seqboat::server
