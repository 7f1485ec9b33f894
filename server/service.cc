// The gRPC service: request parsing and validation, one reactor per Generate stream with
// bounded buffering, Tokenize and GetModelInfo.
#include "server/service.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/stubs/logging.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <mutex>
#include <random>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/util/utf8.h"
#include "server/api_keys.h"
#include "server/choice_output.h"

namespace seqboat::server {

namespace v1 = ::seqboat::v1;

namespace {
class GenerateCall;
}  // namespace

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

  // Generate calls from submission to their Finish, with their choices: what they hold of
  // the capacity shared with the HTTP API, and the watchdog's list.
  StreamCapacity* capacity;
  std::mutex streams_mu;
  absl::flat_hash_map<GenerateCall*, int> streams;
  // limits.stream_write_timeout, or less once the drain is cut short (ShortenWriteTimeout).
  std::atomic<int64_t> write_timeout_ns{0};

  uint64_t DrawSeed() {
    std::lock_guard<std::mutex> lock(seed_mu);
    return seed_rng();
  }
  // Adds a stream of `choices` unless the shared capacity is taken; false then.
  bool AdmitStream(GenerateCall* call, int choices) {
    std::lock_guard<std::mutex> lock(streams_mu);
    if (!capacity->TryAcquire(choices)) return false;
    streams[call] = choices;
    return true;
  }
  void ForgetStream(GenerateCall* call) {
    std::lock_guard<std::mutex> lock(streams_mu);
    auto it = streams.find(call);
    if (it == streams.end()) return;
    capacity->Release(it->second);
    streams.erase(it);
  }
};

namespace {

grpc::Status ToGrpc(const absl::Status& status) {
  // absl::StatusCode and grpc::StatusCode share their numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// The status's name as gRPC spells it (absl numbers and names the codes alike).
std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

grpc::Status Authorize(const std::vector<std::string>& keys,
                       const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  absl::optional<absl::string_view> value;
  if (it != metadata.end()) value = absl::string_view(it->second.data(), it->second.size());
  return ToGrpc(CheckBearer(keys, value));
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

// Protobuf's log lines while this thread parses a request (ParseRequest), else null.
thread_local std::string* protobuf_log_capture = nullptr;

void RouteProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                      const std::string& message) {
  if (protobuf_log_capture != nullptr) {
    protobuf_log_capture->append(message);
    return;
  }
  // Elsewhere: at most one line a second, with a count of those left out.
  static std::atomic<int64_t> last_ns{0};
  static std::atomic<int64_t> suppressed{0};
  const int64_t now = absl::GetCurrentTimeNanos();
  int64_t last = last_ns.load();
  if (now - last < 1'000'000'000 || !last_ns.compare_exchange_strong(last, now)) {
    suppressed.fetch_add(1);
    return;
  }
  const int64_t left_out = suppressed.exchange(0);
  fprintf(stderr, "seqboat-server: protobuf: %s:%d: %s%s\n", filename, line, message.c_str(),
          left_out > 0 ? absl::StrCat(" (", left_out, " more such lines left out)").c_str() : "");
}

// Full name of every string field reachable from `type` -> its path from there.
void CollectStringFields(const google::protobuf::Descriptor* type, const std::string& prefix,
                         int depth, absl::flat_hash_map<std::string, std::string>* paths) {
  if (depth > 4) return;
  for (int i = 0; i < type->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = type->field(i);
    const std::string path = prefix + field->name();
    if (field->type() == google::protobuf::FieldDescriptor::TYPE_STRING)
      (*paths)[field->full_name()] = path;
    if (field->message_type() != nullptr)
      CollectStringFields(field->message_type(), path + ".", depth + 1, paths);
  }
}

}  // namespace

void InstallProtobufLogHandler() {
  static std::once_flag installed;
  std::call_once(installed, [] { google::protobuf::SetLogHandler(&RouteProtobufLog); });
}

absl::Status ParseRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message) {
  InstallProtobufLogHandler();
  grpc::ByteBuffer copy(bytes);  // shares the slices; the reader consumes its buffer
  std::string log;
  bool parsed;
  {
    grpc::ProtoBufferReader reader(&copy);
    protobuf_log_capture = &log;
    parsed = message->ParseFromZeroCopyStream(&reader);
    protobuf_log_capture = nullptr;
  }
  if (parsed) return absl::OkStatus();
  // protobuf names a string field that is not UTF-8 by its full name, in quotes.
  const size_t open = log.find('\'');
  const size_t close = open == std::string::npos ? std::string::npos : log.find('\'', open + 1);
  if (close != std::string::npos) {
    absl::flat_hash_map<std::string, std::string> paths;
    CollectStringFields(message->GetDescriptor(), "", 0, &paths);
    auto it = paths.find(log.substr(open + 1, close - open - 1));
    if (it != paths.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          it->second, ": not valid UTF-8 (a string field must be; send other bytes escaped)"));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("the request is not a valid ",
                                                 message->GetDescriptor()->full_name(),
                                                 " (malformed protobuf bytes)"));
}

namespace {

// One Generate call. The engine thread calls the Handle* methods through one CallSink per
// choice (GenerationParams::n), gRPC calls the reactions, the service's watchdog calls
// CheckWriteTimeout. Every decision is made under mu_; StartWrite, Finish and TryCancel are
// called after unlocking.
//
// What is kept: each choice's ChoiceOutput (tokens its stop filter holds back, then what is
// released but not yet written), the prompt's scores not yet written, all of it bounded by
// limits.stream_buffer_bytes, then the one message being written. Messages are built when a
// write starts, off the engine thread.
//
// References keep `this` alive: gRPC's (dropped in OnDone), the engine's (one per choice,
// from Submit to the end of that choice's HandleFinish: the engine thread may still be
// inside it when gRPC is done), and the watchdog's while it looks at the call.
class GenerateCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateCall(std::shared_ptr<SeqBoatService::Shared> shared, grpc::CallbackServerContext* context)
      : shared_(std::move(shared)), context_(context) {}

  void Start(const grpc::ByteBuffer& request, bool accepting);

  bool HandleToken(int choice, const GeneratedToken& token);
  void HandleFinish(int choice, const FinishInfo& info);
  void HandlePromptLogprobs(const std::vector<GeneratedToken>& tokens);

  // Ends the call when its write in flight has waited longer than the write timeout.
  void CheckWriteTimeout(absl::Time now);

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
    Execute(std::move(action));
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      client_cancelled_ = true;
    }
    CancelEngine();
  }

  void OnDone() override {
    if (count_when_done_ && shared_->metrics != nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      shared_->metrics->RecordRequest(client_cancelled_ ? "CANCELLED" : "INVALID_ARGUMENT");
    }
    shared_->ForgetStream(this);  // if it never reached Finish through Execute
    Unref();
  }

  void Ref(int count = 1) { refs_.fetch_add(count, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  struct Choice {
    Choice(const Tokenizer& tokenizer, ChoiceOutput::Options options)
        : output(tokenizer, std::move(options)) {}
    ChoiceOutput output;
    v1::GenerateResponse final;  // its `finish` message, once the engine is done with it
    FinishReason reason = FinishReason::kLength;
    bool engine_done = false;
    bool final_sent = false;
  };
  struct Action {
    enum Kind { kNothing, kWrite, kFinish } kind = kNothing;
    // kWrite: a choice's chunk, its final message (`final`), or the prompt's scores.
    int choice = 0;
    ChoiceOutput::Chunk chunk;
    bool final = false;
    std::vector<GeneratedToken> prompt_scores;
    grpc::Status status;  // kFinish
  };

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
  // Ends the stream with `status` (its client reads too slowly): drops what it holds and
  // stops the engine's request; the finish follows the write in flight. Without mu_.
  void Abort(grpc::Status status);
  // With mu_ held: whether what waits for the client exceeds the buffer (then Abort).
  bool OverBudgetLocked() const;
  grpc::Status FinalStatusLocked() const;
  Action DecideLocked();        // with mu_ held: the next write or the finish, claimed
  void Execute(Action action);  // without mu_; kFinish may delete `this`
  void Pump();
  void SerializeChunk(int choice, ChoiceOutput::Chunk chunk);

  const std::shared_ptr<SeqBoatService::Shared> shared_;
  grpc::CallbackServerContext* const context_;
  std::atomic<int> refs_{1};  // gRPC's, plus the engine's per choice it holds
  std::string request_id_;
  bool want_logprobs_ = false;
  bool want_activations_ = false;
  uint64_t seed_ = 0;
  bool count_when_done_ = false;  // a call without a request message: counted in OnDone

  std::mutex mu_;
  std::shared_ptr<RequestHandle> handle_;
  std::vector<std::unique_ptr<Choice>> choices_;
  std::vector<GeneratedToken> prompt_scores_;  // the prompt's, not yet written
  int64_t prompt_score_bytes_ = 0;
  size_t next_choice_ = 0;    // where the round-robin over choices with output resumes
  grpc::ByteBuffer writing_;  // owned by the write in flight
  absl::Time write_started_;
  grpc::Status abort_status_;  // not OK once Abort ended the stream
  bool write_in_flight_ = false;
  bool finish_called_ = false;
  bool stream_broken_ = false;
  bool client_cancelled_ = false;
  bool cancel_requested_ = false;  // the write timeout called TryCancel
};

class CallSink final : public RequestSink {
 public:
  CallSink(GenerateCall* call, int choice) : call_(call), choice_(choice) {}
  bool OnToken(const GeneratedToken& token) override { return call_->HandleToken(choice_, token); }
  void OnFinish(const FinishInfo& info) override { call_->HandleFinish(choice_, info); }
  void OnPromptLogprobs(int64_t position, const std::vector<GeneratedToken>& tokens) override {
    call_->HandlePromptLogprobs(tokens);
  }

 private:
  GenerateCall* const call_;
  const int choice_;
};

void GenerateCall::Start(const grpc::ByteBuffer& bytes, bool accepting) {
  SeqBoatService::Shared& shared = *shared_;
  grpc::Status auth = Authorize(shared.api_keys, *context_);
  if (!auth.ok()) return Reject(auth);
  if (!accepting) return Reject(grpc::Status(grpc::UNAVAILABLE, "the server is shutting down"));
  // No request message: the client cancelled or went away before sending it (then gRPC
  // starts the call all the same), or it half-closed without one.
  // It is counted when gRPC is done with it: CANCELLED if the client's cancellation arrived
  // meanwhile (OnCancel), else INVALID_ARGUMENT.
  if (!bytes.Valid()) {
    if (context_->IsCancelled()) return Reject(grpc::Status(grpc::CANCELLED, "cancelled"));
    count_when_done_ = true;
    return Finish(
        grpc::Status(grpc::INVALID_ARGUMENT, "no request message: expected one GenerateRequest"));
  }
  v1::GenerateRequest request;
  if (absl::Status parsed = ParseRequest(bytes, &request); !parsed.ok())
    return Reject(ToGrpc(parsed));

  request_id_ = request.request_id().empty()
                    ? absl::StrFormat("req-%d", shared.next_request.fetch_add(1))
                    : request.request_id();
  GenerationParams params;
  std::vector<std::string> stops;
  seed_ = request.sampling().has_seed() ? request.sampling().seed() : shared.DrawSeed();
  absl::Status valid = BuildGenerationParams(request, *shared.tokenizer, shared.config,
                                             shared.limits.rules, seed_, &params, &stops);
  if (!valid.ok()) return Reject(ToGrpc(valid));
  const auto deadline = context_->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    params.deadline = absl::FromChrono(deadline) - shared.limits.deadline_margin;
  }
  want_logprobs_ = params.top_logprobs > 0;
  want_activations_ = params.return_activations;
  ChoiceOutput::Options options{stops, request.stopping().include_stop_sequence(), want_logprobs_,
                                want_activations_};
  std::vector<std::shared_ptr<RequestSink>> sinks;
  for (int k = 0; k < params.n; ++k) {
    choices_.push_back(std::make_unique<Choice>(*shared.tokenizer, options));
    sinks.push_back(std::make_shared<CallSink>(this, k));
  }

  if (!shared.AdmitStream(this, params.n)) {
    return Reject(grpc::Status(
        grpc::RESOURCE_EXHAUSTED,
        absl::StrCat("the server is full: ", shared.capacity->limit(),
                     " streams are open (running, waiting, or finished and not yet read by "
                     "their client); retry later")));
  }
  const int n = params.n;
  Ref(n);  // the engine's, one dropped by each choice's HandleFinish
  absl::StatusOr<std::shared_ptr<RequestHandle>> handle =
      shared.engine->Submit(std::move(params), std::move(sinks));
  if (!handle.ok()) {
    shared.ForgetStream(this);
    refs_.fetch_sub(n, std::memory_order_relaxed);  // never submitted; gRPC's ref remains
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

bool GenerateCall::OverBudgetLocked() const {
  int64_t bytes = prompt_score_bytes_;
  for (const auto& choice : choices_) bytes += choice->output.unsent_bytes();
  return bytes > shared_->limits.stream_buffer_bytes;
}

bool GenerateCall::HandleToken(int choice, const GeneratedToken& token) {
  bool going, over_budget;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!abort_status_.ok()) return true;  // ended; the engine drops the request next iteration
    going = choices_[choice]->output.Append(token);
    over_budget = OverBudgetLocked();
  }
  if (over_budget) {
    Abort(grpc::Status(
        grpc::RESOURCE_EXHAUSTED,
        absl::StrCat("the client reads too slowly: more than ", shared_->limits.stream_buffer_bytes,
                     " bytes of this stream are waiting for it; the stream is ended")));
    return true;
  }
  Pump();
  return going;
}

void GenerateCall::HandlePromptLogprobs(const std::vector<GeneratedToken>& tokens) {
  bool over_budget;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!abort_status_.ok()) return;
    for (const GeneratedToken& token : tokens) {
      prompt_scores_.push_back(token);
      prompt_score_bytes_ += 12 + 24 * static_cast<int64_t>(token.top.size());
    }
    over_budget = OverBudgetLocked();
  }
  if (over_budget) {
    Abort(grpc::Status(
        grpc::RESOURCE_EXHAUSTED,
        absl::StrCat("the client reads too slowly: more than ", shared_->limits.stream_buffer_bytes,
                     " bytes of this stream are waiting for it; the stream is ended")));
    return;
  }
  Pump();
}

void GenerateCall::HandleFinish(int index, const FinishInfo& info) {
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Choice& choice = *choices_[index];
    if (abort_status_.ok()) choice.output.Finish(info.reason);
    choice.reason = info.reason;
    v1::FinishInfo* finish = choice.final.mutable_finish();
    finish->set_reason(ToProto(info.reason));
    finish->set_error(info.error);
    finish->set_stop_sequence(choice.output.matched_stop());
    finish->set_prompt_tokens(info.prompt_tokens);
    finish->set_cached_prompt_tokens(info.cached_prompt_tokens);
    finish->set_generated_tokens(info.generated_tokens);
    finish->set_queue_seconds(absl::ToDoubleSeconds(info.queue_time));
    finish->set_time_to_first_token_seconds(absl::ToDoubleSeconds(info.time_to_first_token));
    finish->set_total_seconds(absl::ToDoubleSeconds(info.total_time));
    finish->set_seed(seed_ + static_cast<uint64_t>(index));
    choice.final.set_request_id(request_id_);
    choice.final.set_index(index);
    choice.engine_done = true;
    action = DecideLocked();
  }
  Execute(std::move(action));
  Unref();  // the engine is done with this choice
}

void GenerateCall::CheckWriteTimeout(absl::Time now) {
  absl::Duration waited;
  bool aborted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!write_in_flight_ || finish_called_ || cancel_requested_) return;
    waited = now - write_started_;
    if (waited < absl::Nanoseconds(shared_->write_timeout_ns.load())) return;
    aborted = !abort_status_.ok();
    cancel_requested_ = true;
  }
  if (!aborted) {
    Abort(grpc::Status(grpc::DEADLINE_EXCEEDED,
                       absl::StrCat("the client read nothing for ", absl::FormatDuration(waited),
                                    " (the server's write timeout); the stream is ended")));
  }
  // The client is not reading, so the write in flight would never complete: cancel the
  // call (OnWriteDone(false) follows, then the finish with abort_status_).
  context_->TryCancel();
}

void GenerateCall::Abort(grpc::Status status) {
  std::shared_ptr<RequestHandle> handle;
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finish_called_ || !abort_status_.ok()) return;
    abort_status_ = std::move(status);
    for (auto& choice : choices_) choice->output.Drop();
    std::vector<GeneratedToken>().swap(prompt_scores_);
    prompt_score_bytes_ = 0;
    handle = handle_;
    // The finish, if the engine is done and no write is in flight; else when both are. A
    // slow reader then still receives the status and its message; for one that stopped
    // reading, the write timeout cancels the call.
    action = DecideLocked();
  }
  if (handle != nullptr) handle->Cancel();
  Execute(std::move(action));
}

grpc::Status GenerateCall::FinalStatusLocked() const {
  if (!abort_status_.ok()) return abort_status_;
  const bool expired = std::chrono::system_clock::now() >= context_->deadline();
  for (const auto& choice : choices_) {
    if (choice->reason == FinishReason::kError) {
      return grpc::Status(grpc::INTERNAL, choice->final.finish().error());
    }
  }
  if (client_cancelled_ || stream_broken_) {
    return expired ? grpc::Status(grpc::DEADLINE_EXCEEDED, "deadline exceeded")
                   : grpc::Status(grpc::CANCELLED, "cancelled by the client");
  }
  for (const auto& choice : choices_) {
    if (choice->reason == FinishReason::kDeadline) {
      return grpc::Status(grpc::DEADLINE_EXCEEDED,
                          "the call's deadline came before the request ended; the last message "
                          "says how far it got");
    }
  }
  return grpc::Status::OK;
}

GenerateCall::Action GenerateCall::DecideLocked() {
  Action action;
  if (finish_called_ || write_in_flight_) return action;
  const bool writable = !stream_broken_ && !client_cancelled_ && abort_status_.ok();
  bool all_done = true;
  for (const auto& choice : choices_) all_done &= choice->engine_done;
  if (writable && !prompt_scores_.empty()) {
    action.kind = Action::kWrite;
    action.prompt_scores.swap(prompt_scores_);
    prompt_score_bytes_ = 0;
  } else if (writable) {
    // Each choice's output in turn, then the final messages of the choices that are done.
    const size_t n = choices_.size();
    for (size_t k = 0; k < n && action.kind == Action::kNothing; ++k) {
      const size_t i = (next_choice_ + k) % n;
      if (choices_[i]->output.has_unsent()) {
        action.kind = Action::kWrite;
        action.choice = static_cast<int>(i);
        action.chunk = choices_[i]->output.Take();
        next_choice_ = i + 1;
      }
    }
    for (size_t i = 0; i < n && action.kind == Action::kNothing; ++i) {
      Choice& choice = *choices_[i];
      if (choice.engine_done && !choice.final_sent && !choice.output.has_unsent()) {
        action.kind = Action::kWrite;
        action.choice = static_cast<int>(i);
        action.final = true;
        choice.final_sent = true;
      }
    }
  }
  if (action.kind == Action::kWrite) {
    write_in_flight_ = true;
    write_started_ = absl::Now();
    return action;
  }
  if (all_done) {
    action.kind = Action::kFinish;
    action.status = FinalStatusLocked();
    finish_called_ = true;
  }
  return action;
}

// A token's logprob and its alternatives (generated or scored prompt tokens alike).
void FillLogprobs(const GeneratedToken& token, const Tokenizer& tokenizer,
                  v1::TokenLogprobs* logprobs) {
  logprobs->set_token_id(token.token);
  logprobs->set_logprob(token.logprob);
  for (const TokenLogprob& alternative : token.top) {
    v1::Alternative* top = logprobs->add_top();
    top->set_token_id(alternative.token);
    top->set_logprob(alternative.logprob);
    top->set_text(EscapeInvalidUtf8(tokenizer.TokenText(alternative.token)));
  }
}

void GenerateCall::SerializeChunk(int index, ChoiceOutput::Chunk chunk) {
  v1::GenerateResponse message;
  message.set_request_id(request_id_);
  message.set_index(index);
  message.set_text(std::move(chunk.text));
  const Tokenizer& tokenizer = *shared_->tokenizer;
  for (const GeneratedToken& token : chunk.tokens) {
    message.add_token_ids(token.token);
    if (want_logprobs_) FillLogprobs(token, tokenizer, message.add_logprobs());
    if (want_activations_) {
      v1::TokenActivations* activations = message.add_activations();
      for (uint8_t on : token.activations) activations->add_layers(on != 0);
    }
  }
  bool own_buffer;
  grpc::SerializationTraits<v1::GenerateResponse>::Serialize(message, &writing_, &own_buffer);
}

void GenerateCall::Execute(Action action) {  // the caller holds a reference
  if (action.kind == Action::kWrite) {
    // writing_ belongs to this write until OnWriteDone; nobody else touches it meanwhile.
    writing_.Clear();  // serialization needs an empty buffer
    bool own_buffer;
    if (!action.prompt_scores.empty()) {
      v1::GenerateResponse message;
      message.set_request_id(request_id_);
      const Tokenizer& tokenizer = *shared_->tokenizer;
      for (const GeneratedToken& token : action.prompt_scores) {
        FillLogprobs(token, tokenizer, message.add_prompt_logprobs());
      }
      grpc::SerializationTraits<v1::GenerateResponse>::Serialize(message, &writing_, &own_buffer);
    } else if (action.final) {
      // A choice's final message is never changed once its engine part is done.
      grpc::SerializationTraits<v1::GenerateResponse>::Serialize(choices_[action.choice]->final,
                                                                 &writing_, &own_buffer);
    } else {
      SerializeChunk(action.choice, std::move(action.chunk));
    }
    StartWrite(&writing_);
  } else if (action.kind == Action::kFinish) {
    if (shared_->metrics != nullptr)
      shared_->metrics->RecordRequest(CodeName(action.status.error_code()));
    // Room for another stream before this one's client sees its status.
    shared_->ForgetStream(this);
    Finish(action.status);
  }
}

void GenerateCall::Pump() {
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    action = DecideLocked();
  }
  Execute(std::move(action));
}

}  // namespace

SeqBoatService::SeqBoatService(Engine* engine, const Tokenizer* tokenizer,
                               const ModelConfig& config, v1::ModelInfo info,
                               const ServiceLimits& limits, std::vector<std::string> api_keys,
                               StreamCapacity* capacity, Metrics* metrics)
    : shared_(std::make_shared<Shared>()) {
  shared_->capacity = capacity;
  shared_->engine = engine;
  shared_->tokenizer = tokenizer;
  shared_->config = config;
  shared_->info = std::move(info);
  shared_->limits = limits;
  shared_->write_timeout_ns = absl::ToInt64Nanoseconds(limits.stream_write_timeout);
  shared_->api_keys = std::move(api_keys);
  shared_->metrics = metrics;
  InstallProtobufLogHandler();
  // Write timeouts are checked every 100 ms (well under any sensible timeout).
  watchdog_ = std::thread([this] {
    std::vector<GenerateCall*> calls;
    while (!stop_watchdog_.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      {
        // A call in the set has not reached OnDone, so it is alive while the lock is held.
        std::lock_guard<std::mutex> lock(shared_->streams_mu);
        calls.clear();
        for (const auto& [call, choices] : shared_->streams) calls.push_back(call);
        for (GenerateCall* call : calls) call->Ref();
      }
      const absl::Time now = absl::Now();
      for (GenerateCall* call : calls) {
        call->CheckWriteTimeout(now);
        call->Unref();
      }
    }
  });
}

void SeqBoatService::ShortenWriteTimeout(absl::Duration timeout) {
  const int64_t ns = absl::ToInt64Nanoseconds(timeout);
  int64_t now = shared_->write_timeout_ns.load();
  while (ns < now && !shared_->write_timeout_ns.compare_exchange_weak(now, ns)) {
  }
}

int64_t SeqBoatService::open_streams() const { return shared_->capacity->open(); }

SeqBoatService::~SeqBoatService() {
  stop_watchdog_.Notify();
  watchdog_.join();
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* SeqBoatService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  auto* call = new GenerateCall(shared_, context);
  call->Start(*request, accepting_.load());
  return call;
}

grpc::ServerUnaryReactor* SeqBoatService::Tokenize(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* bytes,
                                                   grpc::ByteBuffer* response_bytes) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::Status status = Authorize(shared_->api_keys, *context);
  v1::TokenizeRequest request;
  if (status.ok()) status = ToGrpc(ParseRequest(*bytes, &request));
  if (status.ok() &&
      static_cast<int64_t>(request.text().size()) > shared_->limits.rules.max_text_bytes) {
    status = grpc::Status(grpc::INVALID_ARGUMENT,
                          absl::StrCat("text: ", request.text().size(), " bytes; at most ",
                                       shared_->limits.rules.max_text_bytes));
  }
  if (status.ok()) {
    absl::StatusOr<std::vector<int32_t>> ids = shared_->tokenizer->EncodePrompt(request.text());
    if (!ids.ok()) {
      status = grpc::Status(grpc::INVALID_ARGUMENT, absl::StrCat("text: ", ids.status().message()));
    } else {
      v1::TokenizeResponse response;
      response.mutable_token_ids()->Add(ids->begin(), ids->end());
      for (int32_t id : *ids)
        response.add_pieces(EscapeInvalidUtf8(shared_->tokenizer->TokenText(id)));
      bool own_buffer;
      status = grpc::SerializationTraits<v1::TokenizeResponse>::Serialize(response, response_bytes,
                                                                          &own_buffer);
    }
  }
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* SeqBoatService::GetModelInfo(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* bytes,
                                                       grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::Status status = Authorize(shared_->api_keys, *context);
  v1::GetModelInfoRequest request;
  if (status.ok()) status = ToGrpc(ParseRequest(*bytes, &request));
  bool own_buffer;
  if (status.ok())
    status =
        grpc::SerializationTraits<v1::ModelInfo>::Serialize(shared_->info, response, &own_buffer);
  reactor->Finish(status);
  return reactor;
}

}  // namespace seqboat::server
