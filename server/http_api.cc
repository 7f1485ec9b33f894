// HttpApi: routing, bodies, requests to the engine, streamed and whole responses, and the
// suspend/resume life of a connection that waits for tokens.
#include "server/http_api.h"

#include <microhttpd.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "nlohmann/json.hpp"
#include "runtime/util/utf8.h"
#include "server/api_keys.h"
#include "server/choice_output.h"
#include "server/listen_socket.h"
#include "server/openai_api.h"
#include "server/playground/playground.h"

namespace seqboat::server {

using json = nlohmann::json;

namespace {

enum class Route {
  kNone,
  kHealth,
  kModels,
  kModel,
  kCompletions,
  kChat,
  kTokenize,
  kDetokenize,
  kModelInfo,
  kPlayground,
};

struct RouteSpec {
  const char* path;
  const char* method;
  Route route;
  bool needs_key;
};
constexpr RouteSpec kRoutes[] = {
    {"/health", "GET", Route::kHealth, false},
    {"/v1/models", "GET", Route::kModels, false},
    {"/v1/models/", "GET", Route::kModel, false},  // /v1/models/{id}: a prefix
    {"/v1/completions", "POST", Route::kCompletions, true},
    {"/v1/chat/completions", "POST", Route::kChat, true},
    {"/tokenize", "POST", Route::kTokenize, true},
    {"/detokenize", "POST", Route::kDetokenize, true},
    {"/model_info", "GET", Route::kModelInfo, true},
    // The playground's files (server/playground/); "/" is its page.
    {"/", "GET", Route::kPlayground, false},
    {"/playground.css", "GET", Route::kPlayground, false},
    {"/playground.js", "GET", Route::kPlayground, false},
};

// gRPC's name for an HTTP outcome, for seqboat_requests_total{api="http"}.
const char* CodeName(int status) {
  switch (status) {
    case 200: return "OK";
    case 400:
    case 404:
    case 405:
    case 413:
    case 415: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 429: return "RESOURCE_EXHAUSTED";
    case 503: return "UNAVAILABLE";
    case 504: return "DEADLINE_EXCEEDED";
    default: return "INTERNAL";
  }
}

std::string RandomId(const char* prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return absl::StrFormat("%s-%016x", prefix, rng());
}

}  // namespace

class HttpCall;

struct HttpApi::Impl {
  HttpApiOptions options;
  Engine* engine;
  const Tokenizer* tokenizer;
  ModelConfig config;
  StreamCapacity* capacity;
  Metrics* metrics;
  std::function<bool()> serving;
  int64_t created = 0;
  std::atomic<bool> accepting{true};
  MHD_Daemon* daemon = nullptr;
  int port = 0;
  std::mutex seed_mu;
  std::mt19937_64 seed_rng{std::random_device{}()};

  // Calls from their first byte to MHD's completion: the watchdog looks for hang-ups.
  std::mutex calls_mu;
  std::set<std::shared_ptr<HttpCall>> calls;
  absl::Notification stop_watchdog;
  std::thread watchdog;

  uint64_t DrawSeed() {
    std::lock_guard<std::mutex> lock(seed_mu);
    return seed_rng();
  }
  // A request's outcome: its HTTP status, and the code seqboat_requests_total counts (by
  // default the status's; a stream that began with 200 may end otherwise).
  void Record(int status, const char* code = nullptr) {
    if (metrics == nullptr) return;
    metrics->RecordRequest(code != nullptr ? code : CodeName(status), "http");
    metrics->RecordHttpResponse(status);
  }
};

namespace {

// One prompt's choices on their way to the client.
struct ChoiceState {
  ChoiceState(const Tokenizer& tokenizer, ChoiceOutput::Options options)
      : output(tokenizer, std::move(options)) {}
  ChoiceOutput output;
  ChoiceResult result;  // whole responses gather everything here; streams only the reason
  bool done = false;
  bool start_sent = false;
  bool finish_sent = false;
  int64_t text_chars = 0;  // characters streamed so far (the text offsets of the next tokens)
  int64_t echo_chars = 0;  // of them, the echoed prompt's

  // A whole response's: what the output released joins the result.
  void Gather() {
    ChoiceOutput::Chunk chunk = output.Take();
    result.text += chunk.text;
    for (GeneratedToken& t : chunk.tokens) result.tokens.push_back(std::move(t));
    result.text_offsets.insert(result.text_offsets.end(), chunk.text_offsets.begin(),
                               chunk.text_offsets.end());
  }
};

struct PromptState {
  PromptResult result;
  std::vector<std::unique_ptr<ChoiceState>> choices;
  std::shared_ptr<RequestHandle> handle;
};

MHD_Result Queue(MHD_Connection* connection, int status, const std::string& body,
                 const char* content_type = "application/json",
                 std::initializer_list<std::pair<const char*, const char*>> headers = {}) {
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  for (const auto& [name, value] : headers) MHD_add_response_header(response, name, value);
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

}  // namespace

// One HTTP request. MHD's threads run the handler, the content reader and the completion;
// the engine thread runs the sinks; the watchdog looks for hang-ups. Everything below mu_ is
// guarded by it; the connection is touched only while `alive_`.
class HttpCall : public std::enable_shared_from_this<HttpCall> {
 public:
  HttpCall(HttpApi::Impl* api, MHD_Connection* connection, const RouteSpec* route, std::string url)
      : api_(api), connection_(connection), route_(route), url_(std::move(url)) {
    const MHD_ConnectionInfo* info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    fd_ = info != nullptr ? info->connect_fd : -1;
  }

  const RouteSpec* route() const { return route_; }
  bool submitted() const { return submitted_; }
  std::string& body() { return body_; }
  bool body_too_large = false;

  // The handler's last call for a request whose body is in: answers it or starts it.
  MHD_Result Serve();
  // The handler's call after a whole response's request has finished.
  MHD_Result Respond();
  // MHD wants more of a streamed response.
  ssize_t Read(char* buffer, size_t max);
  // MHD is done with the connection (sent, failed or timed out).
  void Completed(MHD_RequestTerminationCode code);
  // The watchdog: the client of a suspended connection hung up.
  void CheckHangUp();
  // Shutdown: the call ends now (its requests cancelled, its connection resumed).
  void End();

  // The engine thread, through the sinks.
  bool OnToken(int prompt, int choice, const GeneratedToken& token);
  void OnFinish(int prompt, int choice, const FinishInfo& info);
  void OnPromptLogprobs(int prompt, const std::vector<GeneratedToken>& tokens);

 private:
  MHD_Result Error(int status, const std::string& message, const std::string& param = "",
                   std::initializer_list<std::pair<const char*, const char*>> headers = {});
  MHD_Result ServeGeneration(OpenAiEndpoint endpoint);
  nlohmann::json ModelObject() const;  // the served model, as /v1/models lists it
  MHD_Result ServeTokenize();
  MHD_Result ServeDetokenize();
  MHD_Result ServePlayground();
  void WakeLocked();  // resumes the connection if it is suspended
  void CancelAll();
  void CancelLocked();  // CancelAll with mu_ held
  void ReleaseCapacityLocked();
  bool OverBudgetLocked() const;
  void Abort(const std::string& message);  // ends a stream whose client reads too slowly
  bool BuildEventsLocked();                // appends the next events to out_; false: nothing yet
  void Finished(int status);               // the response is fully produced

  HttpApi::Impl* const api_;
  MHD_Connection* const connection_;
  const RouteSpec* const route_;
  const std::string url_;
  int fd_ = -1;
  std::string body_;
  bool submitted_ = false;
  OpenAiRequest request_;
  ResponseIdentity identity_;

  std::mutex mu_;
  bool alive_ = true;  // MHD still holds the connection
  bool suspended_ = false;
  bool client_gone_ = false;
  bool recorded_ = false;
  int64_t capacity_held_ = 0;
  int open_choices_ = 0;  // choices the engine has not finished
  std::vector<PromptState> prompts_;
  std::string aborted_;  // why the stream was ended early, or ""
  bool error_sent_ = false;
  bool usage_sent_ = false;
  bool done_sent_ = false;
  size_t next_ = 0;                    // the round-robin over choices
  std::string out_;                    // stream bytes produced, not yet handed to MHD
  const char* ending_code_ = nullptr;  // a stream that ended with an error event: its code
};

namespace {

class ChoiceSink final : public RequestSink {
 public:
  ChoiceSink(std::shared_ptr<HttpCall> call, int prompt, int choice)
      : call_(std::move(call)), prompt_(prompt), choice_(choice) {}
  bool OnToken(const GeneratedToken& token) override {
    return call_->OnToken(prompt_, choice_, token);
  }
  void OnFinish(const FinishInfo& info) override { call_->OnFinish(prompt_, choice_, info); }
  void OnPromptLogprobs(int64_t position, const std::vector<GeneratedToken>& tokens) override {
    call_->OnPromptLogprobs(prompt_, tokens);
  }

 private:
  const std::shared_ptr<HttpCall> call_;
  const int prompt_, choice_;
};

std::string Sse(const json& event) { return absl::StrCat("data: ", event.dump(), "\n\n"); }

ssize_t ReadStream(void* cls, uint64_t /*pos*/, char* buffer, size_t max) {
  return static_cast<HttpCall*>(cls)->Read(buffer, max);
}

}  // namespace

MHD_Result HttpCall::Error(int status, const std::string& message, const std::string& param,
                           std::initializer_list<std::pair<const char*, const char*>> headers) {
  Finished(status);
  return Queue(connection_, status, ErrorBody(status, message, param).dump(), "application/json",
               headers);
}

void HttpCall::Finished(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseCapacityLocked();
  if (recorded_) return;
  recorded_ = true;
  api_->Record(status);
}

void HttpCall::ReleaseCapacityLocked() {
  if (capacity_held_ > 0) api_->capacity->Release(capacity_held_);
  capacity_held_ = 0;
}

json HttpCall::ModelObject() const {
  return {{"id", api_->options.served_model_name},
          {"object", "model"},
          {"created", api_->created},
          {"owned_by", "seqboat"},
          {"root", api_->options.served_model_name},
          {"max_model_len", api_->options.rules.engine.max_prompt_tokens}};
}

MHD_Result HttpCall::Serve() {
  HttpApi::Impl& api = *api_;
  switch (route_->route) {
    case Route::kHealth:
      if (api.serving()) {
        Finished(200);
        return Queue(connection_, 200, R"({"status":"serving"})");
      }
      return Error(
          503, "the server is not serving (draining, or its engine or backend is not responding)");
    case Route::kModel: {
      const std::string id = url_.substr(std::strlen(route_->path));
      if (id != api.options.served_model_name) {
        return Error(404,
                     absl::StrCat("model: '", id, "' is not served here; this server serves '",
                                  api.options.served_model_name, "'"),
                     "model");
      }
      Finished(200);
      return Queue(connection_, 200, ModelObject().dump());
    }
    case Route::kModels: {
      const json models = {{"object", "list"}, {"data", json::array({ModelObject()})}};
      Finished(200);
      return Queue(connection_, 200, models.dump());
    }
    case Route::kCompletions: return ServeGeneration(OpenAiEndpoint::kCompletions);
    case Route::kChat: return ServeGeneration(OpenAiEndpoint::kChat);
    case Route::kTokenize: return ServeTokenize();
    case Route::kDetokenize: return ServeDetokenize();
    case Route::kModelInfo:
      Finished(200);
      return Queue(connection_, 200, api.options.model_info_json);
    case Route::kPlayground: return ServePlayground();
    case Route::kNone: break;
  }
  return Error(404, "not found");
}

MHD_Result HttpCall::ServePlayground() {
  if (!api_->options.playground) {
    return Error(404, absl::StrCat("not found: ", url_,
                                   " (the playground is off; seqboat-server --playground on)"));
  }
  const PlaygroundFile* file = FindPlaygroundFile(url_);
  if (file == nullptr) return Error(404, absl::StrCat("not found: ", url_));
  Finished(200);
  // Everything the page uses comes from this server: the policy lets it fetch nothing else.
  return Queue(connection_, 200, std::string(file->content), file->content_type,
               {{"Content-Security-Policy",
                 "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                 "img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                 "frame-ancestors 'none'"},
                {"X-Content-Type-Options", "nosniff"},
                {"Cache-Control", "no-cache"}});
}

MHD_Result HttpCall::ServeTokenize() {
  const json body = json::parse(body_, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return Error(400, "the body is not JSON");
  if (!body.is_object() || !body.contains("prompt") || !body["prompt"].is_string()) {
    return Error(400, "prompt: expected a string", "prompt");
  }
  const std::string prompt = body["prompt"].get<std::string>();
  if (static_cast<int64_t>(prompt.size()) > api_->options.rules.max_text_bytes) {
    return Error(400,
                 absl::StrCat("prompt: ", prompt.size(), " bytes; at most ",
                              api_->options.rules.max_text_bytes),
                 "prompt");
  }
  bool add_special = true;
  if (body.contains("add_special_tokens")) {
    if (!body["add_special_tokens"].is_boolean()) {
      return Error(400, "add_special_tokens: expected true or false", "add_special_tokens");
    }
    add_special = body["add_special_tokens"].get<bool>();
  }
  const Tokenizer& tokenizer = *api_->tokenizer;
  absl::StatusOr<std::vector<int32_t>> ids =
      add_special ? tokenizer.EncodePrompt(prompt) : tokenizer.Encode(prompt);
  if (!ids.ok()) return Error(400, absl::StrCat("prompt: ", ids.status().message()), "prompt");
  json strs = json::array();
  for (int32_t id : *ids) strs.push_back(EscapeInvalidUtf8(tokenizer.TokenText(id)));
  const json out = {{"count", ids->size()},
                    {"max_model_len", api_->options.rules.engine.max_prompt_tokens},
                    {"tokens", *ids},
                    {"token_strs", std::move(strs)}};
  Finished(200);
  return Queue(connection_, 200, out.dump());
}

MHD_Result HttpCall::ServeDetokenize() {
  const json body = json::parse(body_, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return Error(400, "the body is not JSON");
  if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array()) {
    return Error(400, "tokens: expected an array of token ids", "tokens");
  }
  std::vector<int32_t> ids;
  const int V = api_->config.vocab_size;
  for (size_t i = 0; i < body["tokens"].size(); ++i) {
    const json& id = body["tokens"][i];
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= V) {
      return Error(400, absl::StrCat("tokens[", i, "]: expected a token id in 0..", V - 1),
                   "tokens");
    }
    ids.push_back(id.get<int32_t>());
  }
  Finished(200);
  return Queue(connection_, 200, json{{"prompt", api_->tokenizer->Decode(ids)}}.dump());
}

MHD_Result HttpCall::ServeGeneration(OpenAiEndpoint endpoint) {
  HttpApi::Impl& api = *api_;
  if (!api.accepting.load()) return Error(503, "the server is shutting down");
  const json body = json::parse(body_, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return Error(400, "the body is not JSON");
  absl::StatusOr<OpenAiRequest> parsed =
      ParseOpenAiRequest(body, endpoint, api.options.chat_template);
  if (!parsed.ok()) {
    const std::string message(parsed.status().message());
    return Error(400, message, ErrorParam(message));
  }
  request_ = *std::move(parsed);
  if (!request_.model.empty() && request_.model != api.options.served_model_name) {
    return Error(
        404,
        absl::StrCat("model: '", request_.model, "' is not served here; this server serves '",
                     api.options.served_model_name, "'"),
        "model");
  }
  identity_ = {RandomId(endpoint == OpenAiEndpoint::kChat ? "chatcmpl" : "cmpl"),
               api.options.served_model_name,
               static_cast<int64_t>(absl::ToUnixSeconds(absl::Now()))};
  // Every prompt through the request builder, before anything runs.
  const FieldNames names = OpenAiFieldNames(endpoint);
  const uint64_t seed = request_.seed.has_value() ? *request_.seed : api.DrawSeed();
  std::vector<GenerationParams> params(request_.prompts.size());
  std::vector<std::vector<std::string>> stops(request_.prompts.size());
  for (size_t p = 0; p < request_.prompts.size(); ++p) {
    absl::Status built =
        BuildGeneration(request_.prompts[p].request, *api.tokenizer, api.config, api.options.rules,
                        names, seed + p * request_.n, &params[p], &stops[p]);
    if (!built.ok()) {
      const std::string message(built.message());
      return Error(HttpStatusFor(built), message, ErrorParam(message));
    }
  }
  const int64_t choices = static_cast<int64_t>(request_.prompts.size()) * request_.n;
  if (choices > api.capacity->limit()) {  // never fits: not a reason to retry
    return Error(400,
                 absl::StrCat("prompt: ", request_.prompts.size(), " prompts with n ", request_.n,
                              " are ", choices, " choices; this server runs at most ",
                              api.capacity->limit(), " at once"),
                 "prompt");
  }
  if (!api.capacity->TryAcquire(choices)) {
    return Error(
        429,
        absl::StrCat(
            "the server is full: ", api.capacity->limit(),
            " streams are open (running, waiting, or finished and not yet read); retry later"),
        "", {{MHD_HTTP_HEADER_RETRY_AFTER, "1"}});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    capacity_held_ = choices;
    prompts_.resize(request_.prompts.size());
    const bool want_logprobs = request_.logprobs.has_value();
    for (size_t p = 0; p < prompts_.size(); ++p) {
      prompts_[p].result.prompt_tokens = params[p].prompt;
      for (int k = 0; k < request_.n; ++k) {
        ChoiceOutput::Options options{stops[p], request_.include_stop, want_logprobs,
                                      request_.return_activations};
        prompts_[p].choices.push_back(
            std::make_unique<ChoiceState>(*api.tokenizer, std::move(options)));
      }
    }
    open_choices_ = static_cast<int>(choices);
  }
  submitted_ = true;
  for (size_t p = 0; p < prompts_.size(); ++p) {
    std::vector<std::shared_ptr<RequestSink>> sinks;
    for (int k = 0; k < request_.n; ++k) {
      sinks.push_back(std::make_shared<ChoiceSink>(shared_from_this(), static_cast<int>(p), k));
    }
    absl::StatusOr<std::shared_ptr<RequestHandle>> handle =
        api.engine->Submit(std::move(params[p]), std::move(sinks));
    if (!handle.ok()) {
      // Nothing of this request runs: the prompts already submitted are cancelled.
      {
        std::lock_guard<std::mutex> lock(mu_);
        open_choices_ -= static_cast<int>((prompts_.size() - p) * request_.n);
        aborted_ = "refused";
      }
      CancelAll();
      const std::string message(handle.status().message());
      const int status = HttpStatusFor(handle.status());
      return Error(
          status, message, status == 400 ? ErrorParam(message) : "",
          status == 429
              ? std::initializer_list<
                    std::pair<const char*, const char*>>{{MHD_HTTP_HEADER_RETRY_AFTER, "1"}}
              : std::initializer_list<std::pair<const char*, const char*>>{});
    }
    std::lock_guard<std::mutex> lock(mu_);
    prompts_[p].handle = *handle;
  }
  if (request_.stream) {
    MHD_Response* response =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, &ReadStream, this, nullptr);
    if (response == nullptr) return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/event-stream; charset=utf-8");
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    const MHD_Result queued = MHD_queue_response(connection_, 200, response);
    MHD_destroy_response(response);
    return queued;
  }
  // A whole response: wait (suspended) until every choice is done, unless all are already.
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (open_choices_ > 0) {
      suspended_ = true;
      MHD_suspend_connection(connection_);
      return MHD_YES;
    }
  }
  return Respond();
}

MHD_Result HttpCall::Respond() {
  std::vector<PromptResult> results;
  bool failed = false;
  std::string error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (open_choices_ > 0) {
      if (client_gone_) return MHD_NO;  // resumed by the watchdog: the client is gone
      suspended_ = true;                // not done yet: wait on
      MHD_suspend_connection(connection_);
      return MHD_YES;
    }
    for (PromptState& prompt : prompts_) {
      PromptResult result = prompt.result;
      for (auto& choice : prompt.choices) {
        result.choices.push_back(choice->result);
        if (choice->result.reason == FinishReason::kError) {
          failed = true;
          error = choice->result.error;
        }
      }
      results.push_back(std::move(result));
    }
  }
  if (failed) return Error(500, absl::StrCat("the backend failed: ", error));
  const std::string body =
      CompletionResponse(request_, results, *api_->tokenizer, identity_).dump();
  Finished(200);
  return Queue(connection_, 200, body);
}

bool HttpCall::OverBudgetLocked() const {
  if (!request_.stream) return false;  // a whole response is the response: its limits bound it
  int64_t bytes = static_cast<int64_t>(out_.size());
  for (const PromptState& prompt : prompts_) {
    for (const auto& choice : prompt.choices) bytes += choice->output.unsent_bytes();
  }
  return bytes > api_->options.stream_buffer_bytes;
}

bool HttpCall::OnToken(int prompt, int choice, const GeneratedToken& token) {
  bool going, over;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!aborted_.empty() || client_gone_) return true;  // the request is cancelled already
    ChoiceState& state = *prompts_[prompt].choices[choice];
    going = state.output.Append(token);
    if (!request_.stream) state.Gather();
    over = OverBudgetLocked();
    if (!over && request_.stream) WakeLocked();  // a whole response waits for OnFinish
  }
  if (over) {
    Abort(absl::StrCat("the client reads too slowly: more than ", api_->options.stream_buffer_bytes,
                       " bytes of this stream are waiting for it; the stream is ended"));
  }
  return going;
}

void HttpCall::OnPromptLogprobs(int prompt, const std::vector<GeneratedToken>& tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<GeneratedToken>& scores = prompts_[prompt].result.prompt_scores;
  scores.insert(scores.end(), tokens.begin(), tokens.end());
}

void HttpCall::OnFinish(int prompt, int choice, const FinishInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  ChoiceState& state = *prompts_[prompt].choices[choice];
  state.output.Finish(info.reason);
  if (!request_.stream) state.Gather();
  state.result.reason = info.reason;
  state.result.error = info.error;
  state.result.generated_tokens = info.generated_tokens;
  state.done = true;
  if (choice == 0) prompts_[prompt].result.cached_tokens = info.cached_prompt_tokens;
  --open_choices_;
  if (request_.stream || open_choices_ == 0) WakeLocked();
}

void HttpCall::WakeLocked() {
  if (!alive_ || !suspended_) return;
  suspended_ = false;
  MHD_resume_connection(connection_);
}

void HttpCall::CancelLocked() {
  for (const PromptState& prompt : prompts_) {
    if (prompt.handle != nullptr) prompt.handle->Cancel();  // a flag: safe under mu_
  }
}

void HttpCall::CancelAll() {
  std::lock_guard<std::mutex> lock(mu_);
  CancelLocked();
}

void HttpCall::Abort(const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!aborted_.empty()) return;
    aborted_ = message;
    for (PromptState& prompt : prompts_) {
      for (auto& choice : prompt.choices) choice->output.Drop();
    }
    // Its fate is decided now, whether or not the client ever reads the error event; what it
    // still holds is bounded (the error event), so its capacity goes to the next request.
    ReleaseCapacityLocked();
    if (!recorded_) {
      recorded_ = true;
      api_->Record(200, "RESOURCE_EXHAUSTED");
    }
    WakeLocked();
  }
  CancelAll();
}

bool HttpCall::BuildEventsLocked() {
  const Tokenizer& tokenizer = *api_->tokenizer;
  if (!aborted_.empty()) {
    if (error_sent_) return false;
    error_sent_ = true;
    ending_code_ = "RESOURCE_EXHAUSTED";
    out_ += Sse(ErrorBody(429, aborted_));
    out_ += "data: [DONE]\n\n";  // as after any error event (vLLM's way): the stream ends
    done_sent_ = true;
    return true;
  }
  // Choices in turn: their start, their text, their end.
  const size_t n = static_cast<size_t>(request_.n), total = prompts_.size() * n;
  bool all_finished = true;
  for (size_t step = 0; step < total && out_.empty(); ++step) {
    const size_t i = (next_ + step) % total;
    PromptState& prompt = prompts_[i / n];
    ChoiceState& choice = *prompt.choices[i % n];
    const int index = static_cast<int>(i);
    if (!choice.start_sent && (choice.output.has_unsent() || choice.done)) {
      // The prompt is fully scored by the time a choice has output.
      choice.start_sent = true;
      std::optional<json> start = StreamStartEvent(request_, index, request_.prompts[i / n],
                                                   prompt.result, tokenizer, identity_);
      if (start.has_value()) {
        out_ += Sse(*start);
        if (request_.echo) {
          choice.echo_chars =
              CountCodePoints(EchoText(request_.prompts[i / n], prompt.result, tokenizer));
          choice.text_chars = choice.echo_chars;
        }
      }
    }
    if (choice.output.has_unsent()) {
      ChoiceOutput::Chunk chunk = choice.output.Take();
      for (int64_t& offset : chunk.text_offsets) offset += choice.echo_chars;
      out_ += Sse(StreamDeltaEvent(request_, index, chunk.text, chunk.tokens, chunk.text_offsets,
                                   choice.text_chars, tokenizer, identity_));
      choice.text_chars += CountCodePoints(chunk.text);
    } else if (choice.done && !choice.finish_sent) {
      choice.finish_sent = true;
      if (choice.result.reason == FinishReason::kError) {
        // Mid-stream, an error is an event; the stream then ends.
        error_sent_ = true;
        ending_code_ = "INTERNAL";
        out_ += Sse(ErrorBody(500, absl::StrCat("the backend failed: ", choice.result.error)));
        CancelLocked();
        return true;
      }
      out_ += Sse(StreamFinishEvent(request_, index, choice.result.reason, identity_));
    }
    all_finished &= choice.finish_sent;
    if (!out_.empty()) next_ = i + 1;
  }
  if (!out_.empty()) return true;
  if (!all_finished) {
    for (const PromptState& prompt : prompts_) {
      for (const auto& choice : prompt.choices) all_finished &= choice->finish_sent;
    }
  }
  if (!all_finished || done_sent_) return false;
  if (request_.include_usage && !usage_sent_) {
    usage_sent_ = true;
    std::vector<PromptResult> results;
    for (PromptState& prompt : prompts_) {
      PromptResult result = prompt.result;
      for (auto& choice : prompt.choices) result.choices.push_back(choice->result);
      results.push_back(std::move(result));
    }
    out_ += Sse(StreamUsageEvent(request_, results, identity_));
  }
  out_ += "data: [DONE]\n\n";
  done_sent_ = true;
  return true;
}

ssize_t HttpCall::Read(char* buffer, size_t max) {
  bool finished = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (client_gone_) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (out_.empty() && !BuildEventsLocked()) {
      if (done_sent_ || error_sent_) return MHD_CONTENT_READER_END_OF_STREAM;
      suspended_ = true;  // until the engine has more (OnToken / OnFinish resume it)
      MHD_suspend_connection(connection_);
      return 0;
    }
    const size_t n = std::min(max, out_.size());
    std::memcpy(buffer, out_.data(), n);
    out_.erase(0, n);
    finished = out_.empty() && (done_sent_ || error_sent_);
    if (!finished) return static_cast<ssize_t>(n);
    // The last bytes: room for another stream before this client can see the end.
    ReleaseCapacityLocked();
    if (!recorded_) {
      recorded_ = true;
      api_->Record(200, ending_code_);
    }
    return static_cast<ssize_t>(n);
  }
}

void HttpCall::Completed(MHD_RequestTerminationCode code) {
  bool cancel;
  {
    std::lock_guard<std::mutex> lock(mu_);
    alive_ = false;
    cancel = open_choices_ > 0;
    ReleaseCapacityLocked();
    // A request MHD ended before its response did: the client went away or timed out.
    if (!recorded_ && submitted_ && api_->metrics != nullptr) {
      api_->metrics->RecordRequest(
          code == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? "DEADLINE_EXCEEDED" : "CANCELLED",
          "http");
    }
    recorded_ = true;
  }
  if (cancel) CancelAll();
}

void HttpCall::End() {
  std::lock_guard<std::mutex> lock(mu_);
  client_gone_ = true;
  CancelLocked();
  WakeLocked();
}

void HttpCall::CheckHangUp() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!alive_ || !suspended_ || fd_ < 0 || client_gone_) return;
    pollfd p{fd_, POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return;
    client_gone_ = true;
    WakeLocked();  // MHD then ends the connection (Read answers an error; Respond refuses)
  }
  CancelAll();
}

namespace {

const RouteSpec* FindRoute(const char* url) {
  for (const RouteSpec& route : kRoutes) {
    const size_t length = std::strlen(route.path);
    const bool prefix = length > 1 && route.path[length - 1] == '/';  // /v1/models/{id}
    if (prefix ? std::strncmp(url, route.path, length) == 0 && url[length] != '\0'
               : std::strcmp(url, route.path) == 0) {
      return &route;
    }
  }
  return nullptr;
}

MHD_Result HandleRequest(void* cls, MHD_Connection* connection, const char* url, const char* method,
                         const char* /*version*/, const char* upload_data, size_t* upload_data_size,
                         void** request_state) {
  auto& api = *static_cast<HttpApi::Impl*>(cls);
  if (*request_state == nullptr) {  // the headers are in
    const RouteSpec* route = FindRoute(url);
    auto call = std::make_shared<HttpCall>(&api, connection, route, url);
    *request_state = new std::shared_ptr<HttpCall>(call);
    {
      std::lock_guard<std::mutex> lock(api.calls_mu);
      api.calls.insert(call);
    }
    // Refusals that need no body are answered now (MHD then closes rather than read one).
    auto refuse = [&](int status, const std::string& message, const std::string& param = "",
                      std::initializer_list<std::pair<const char*, const char*>> headers = {}) {
      api.Record(status);
      return Queue(connection, status, ErrorBody(status, message, param).dump(), "application/json",
                   headers);
    };
    if (route == nullptr) return refuse(404, absl::StrCat("not found: ", url));
    const bool head =
        std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0 && std::strcmp(route->method, "GET") == 0;
    if (std::strcmp(method, route->method) != 0 && !head) {
      return refuse(
          405, absl::StrCat("method ", method, " not allowed on ", url, "; use ", route->method),
          "", {{MHD_HTTP_HEADER_ALLOW, route->method}});
    }
    if (route->needs_key) {
      const char* authorization =
          MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
      const absl::Status auth =
          CheckBearer(api.options.api_keys, authorization == nullptr
                                                ? absl::nullopt
                                                : absl::optional<absl::string_view>(authorization));
      if (!auth.ok()) {
        return refuse(401, std::string(auth.message()), "",
                      {{MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer"}});
      }
    }
    if (std::strcmp(route->method, "POST") == 0) {
      const char* type =
          MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
      if (type == nullptr || !absl::StartsWithIgnoreCase(type, "application/json")) {
        return refuse(415, absl::StrCat("Content-Type: '", type == nullptr ? "" : type,
                                        "'; expected application/json"));
      }
      const char* length =
          MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      int64_t bytes = 0;
      if (length != nullptr && absl::SimpleAtoi(length, &bytes) &&
          bytes > api.options.max_body_bytes) {
        return refuse(413, absl::StrCat("the body is ", bytes, " bytes; at most ",
                                        api.options.max_body_bytes));
      }
    }
    return MHD_YES;
  }
  HttpCall& call = **static_cast<std::shared_ptr<HttpCall>*>(*request_state);
  if (*upload_data_size > 0) {  // a piece of the body
    if (!call.body_too_large &&
        static_cast<int64_t>(call.body().size() + *upload_data_size) > api.options.max_body_bytes) {
      call.body_too_large = true;
    }
    if (!call.body_too_large) call.body().append(upload_data, *upload_data_size);
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (call.body_too_large) {
    api.Record(413);
    return Queue(
        connection, 413,
        ErrorBody(413, absl::StrCat("the body exceeds ", api.options.max_body_bytes, " bytes"))
            .dump());
  }
  return call.submitted() ? call.Respond() : call.Serve();
}

// A new connection's kernel send buffer is capped by the stream buffer (at most 1 MiB), so a
// client that stops reading holds bounded memory in the kernel too, and is found out soon.
void ConnectionStarted(void* cls, MHD_Connection* connection, void** /*socket_context*/,
                       MHD_ConnectionNotificationCode code) {
  if (code != MHD_CONNECTION_NOTIFY_STARTED) return;
  const auto& api = *static_cast<HttpApi::Impl*>(cls);
  const MHD_ConnectionInfo* info =
      MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (info == nullptr) return;
  const int bytes = static_cast<int>(std::min<int64_t>(api.options.stream_buffer_bytes, 1 << 20));
  setsockopt(info->connect_fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
}

void RequestCompleted(void* cls, MHD_Connection* /*connection*/, void** request_state,
                      MHD_RequestTerminationCode code) {
  if (*request_state == nullptr) return;
  auto& api = *static_cast<HttpApi::Impl*>(cls);
  auto* holder = static_cast<std::shared_ptr<HttpCall>*>(*request_state);
  (*holder)->Completed(code);
  {
    std::lock_guard<std::mutex> lock(api.calls_mu);
    api.calls.erase(*holder);
  }
  delete holder;
  *request_state = nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpApi>> HttpApi::Start(HttpApiOptions options, Engine* engine,
                                                        const Tokenizer* tokenizer,
                                                        const ModelConfig& config,
                                                        StreamCapacity* capacity, Metrics* metrics,
                                                        std::function<bool()> serving) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->engine = engine;
  impl->tokenizer = tokenizer;
  impl->config = config;
  impl->capacity = capacity;
  impl->metrics = metrics;
  impl->serving = std::move(serving);
  impl->created = static_cast<int64_t>(absl::ToUnixSeconds(absl::Now()));
  absl::StatusOr<int> fd = ListenTcp(impl->options.listen, &impl->port);
  if (!fd.ok()) return fd.status();
  const HttpApiOptions& o = impl->options;
  unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
  const bool tls = !o.tls_cert_pem.empty();
  if (tls) flags |= MHD_USE_TLS;
  // With a socket of ours MHD opens none; it closes this one when it stops.
  std::vector<MHD_OptionItem> items = {
      {MHD_OPTION_LISTEN_SOCKET, static_cast<intptr_t>(*fd), nullptr},
      {MHD_OPTION_NOTIFY_COMPLETED, reinterpret_cast<intptr_t>(&RequestCompleted), impl.get()},
      {MHD_OPTION_NOTIFY_CONNECTION, reinterpret_cast<intptr_t>(&ConnectionStarted), impl.get()},
      {MHD_OPTION_THREAD_POOL_SIZE, o.threads, nullptr},
      {MHD_OPTION_CONNECTION_LIMIT, o.max_connections, nullptr},
      {MHD_OPTION_CONNECTION_TIMEOUT, static_cast<intptr_t>(absl::ToInt64Seconds(o.idle_timeout)),
       nullptr},
  };
  if (tls) {
    items.push_back({MHD_OPTION_HTTPS_MEM_KEY, 0, const_cast<char*>(o.tls_key_pem.c_str())});
    items.push_back({MHD_OPTION_HTTPS_MEM_CERT, 0, const_cast<char*>(o.tls_cert_pem.c_str())});
  }
  items.push_back({MHD_OPTION_END, 0, nullptr});
  impl->daemon = MHD_start_daemon(flags, 0, nullptr, nullptr, &HandleRequest, impl.get(),
                                  MHD_OPTION_ARRAY, items.data(), MHD_OPTION_END);
  if (impl->daemon == nullptr) {
    close(*fd);
    return absl::InternalError(
        absl::StrCat("cannot start the HTTP server on ", o.listen,
                     tls ? " (is the TLS certificate and key a valid PEM pair?)" : ""));
  }
  Impl* raw = impl.get();
  impl->watchdog = std::thread([raw] {
    while (!raw->stop_watchdog.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      std::vector<std::shared_ptr<HttpCall>> calls;
      {
        std::lock_guard<std::mutex> lock(raw->calls_mu);
        calls.assign(raw->calls.begin(), raw->calls.end());
      }
      for (auto& call : calls) call->CheckHangUp();
    }
  });
  return std::unique_ptr<HttpApi>(new HttpApi(std::move(impl)));
}

HttpApi::HttpApi(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpApi::~HttpApi() {
  impl_->stop_watchdog.Notify();
  impl_->watchdog.join();
  impl_->accepting = false;
  // MHD must not stop with suspended connections: every call's requests are cancelled (the
  // engine has drained already) and its connection resumed to end.
  std::vector<std::shared_ptr<HttpCall>> calls;
  {
    std::lock_guard<std::mutex> lock(impl_->calls_mu);
    calls.assign(impl_->calls.begin(), impl_->calls.end());
  }
  for (auto& call : calls) call->End();
  MHD_stop_daemon(impl_->daemon);
}

int HttpApi::port() const { return impl_->port; }

void HttpApi::StopAccepting() { impl_->accepting = false; }

void HttpApi::WaitIdle(absl::Time deadline) {
  while (absl::Now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(impl_->calls_mu);
      if (impl_->calls.empty()) return;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

}  // namespace seqboat::server
