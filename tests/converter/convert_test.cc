// End-to-end conversions of the torch.save fixtures: exact tensors against the expected
// model files, dtypes, args/cfg variants, reports, --inspect, and every bad input a named error.
#include "converter/convert.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"
#include "tests/converter/converter_test_util.h"

namespace seqboat::convert {
namespace {

using testing::ConverterFixture;
using testing::ScratchDir;

ConvertOptions Options(const std::string& checkpoint, const std::string& out,
                       DType dtype = DType::kF32, const std::string& dict = "dict.txt") {
  ConvertOptions options;
  options.checkpoint_path = ConverterFixture(checkpoint);
  options.dict_path = ConverterFixture(dict);
  options.out_path = out;
  options.dtype = dtype;
  return options;
}

// The converted file holds exactly the expected file's tensors (names, order, dtype, shape,
// bytes) and the same config and tokenizer metadata.
void ExpectSameModelFile(const std::string& actual_path, const std::string& expected_path) {
  auto actual = SafetensorsFile::Open(actual_path);
  auto expected = SafetensorsFile::Open(expected_path);
  ASSERT_TRUE(actual.ok()) << actual.status();
  ASSERT_TRUE(expected.ok()) << expected.status();
  const auto& a = (*actual)->tensors();
  const auto& e = (*expected)->tensors();
  ASSERT_EQ(a.size(), e.size()) << expected_path;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, e[i].name);
    EXPECT_EQ(a[i].dtype, e[i].dtype) << a[i].name;
    EXPECT_EQ(a[i].shape, e[i].shape) << a[i].name;
    ASSERT_EQ(a[i].nbytes, e[i].nbytes) << a[i].name;
    EXPECT_EQ(std::memcmp(a[i].data, e[i].data, a[i].nbytes), 0)
        << expected_path << ": tensor " << a[i].name << " differs";
  }
  for (const char* key : {"format", "format_version", "config", "tokenizer"}) {
    EXPECT_EQ((*actual)->metadata().at(key), (*expected)->metadata().at(key)) << key;
  }
  EXPECT_EQ((*actual)->metadata().at("converter_version"), kConverterVersion);
  EXPECT_EQ((*actual)->metadata().at("source_sha256").size(), 64u);
}

class GoodFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(GoodFixture, ConvertsToTheExpectedTensorsExactly) {
  ScratchDir dir;
  const std::string out = dir / "model.safetensors";
  auto report = ConvertCheckpoint(Options(GetParam() + ".pt", out));
  ASSERT_TRUE(report.ok()) << report.status();
  ExpectSameModelFile(out, ConverterFixture(GetParam() + ".expected.safetensors"));
  auto model = Model::Load(out);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(report->parameter_count, (*model)->parameter_count());
  EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
}

INSTANTIATE_TEST_SUITE_P(Converter, GoodFixture,
                         ::testing::Values("basic", "leftovers", "noncontiguous", "fp16", "bf16",
                                           "protocol4", "protocol5", "zip64", "big_endian",
                                           "untied_ffn_simple", "rmsnorm_embed_norm",
                                           "ffn_by_default", "cfg_dict", "cfg_namespace",
                                           "cfg_dictconfig"));

TEST(Convert, Fp16AndBf16RoundLikeTorch) {
  ScratchDir dir;
  for (auto [dtype, expected] : {std::pair{DType::kF16, "basic.expected_f16.safetensors"},
                                 std::pair{DType::kBF16, "basic.expected_bf16.safetensors"}}) {
    const std::string out = dir / "model.safetensors";
    auto report = ConvertCheckpoint(Options("basic.pt", out, dtype));
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->tensors_copied, report->tensors);  // every tensor was converted
    ExpectSameModelFile(out, ConverterFixture(expected));
    auto model = Model::Load(out);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->stored_dtype(), dtype);
  }
}

TEST(Convert, HalfSourcesPassThroughOrWiden) {
  ScratchDir dir;
  const std::string out = dir / "model.safetensors";
  // fp16 storages written as fp16: bit-exact pass-through, nothing converted.
  auto report = ConvertCheckpoint(Options("fp16.pt", out, DType::kF16));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->tensors_copied, 0);
  auto model = Model::Load(out);
  ASSERT_TRUE(model.ok());
  auto expected = Model::Load(ConverterFixture("fp16.expected.safetensors"));
  ASSERT_TRUE(expected.ok());
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(std::memcmp((*model)->weights().embed, (*expected)->weights().embed,
                        sizeof(float) * c.vocab_size * c.embed_dim),
            0);
}

TEST(Convert, ReportDescribesTheModel) {
  ScratchDir dir;
  auto options = Options("leftovers.pt", dir / "m.safetensors");
  std::vector<std::string> progress;
  options.progress = [&](const std::string& line) { progress.push_back(line); };
  auto report = ConvertCheckpoint(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(progress.empty());  // small checkpoints convert silently
  EXPECT_EQ(report->args_origin, "args");
  EXPECT_EQ(report->model.arch, "slag_lm");
  EXPECT_EQ(report->tokenizer_style, "byte");
  EXPECT_EQ(report->model.config.vocab_size, 10);
  EXPECT_EQ(report->skipped,
            (std::vector<std::string>{"optimizer_history", "extra_state", "last_optimizer_state"}));
  EXPECT_TRUE(report->model.defaults.empty());
  auto has = [&](const std::string& global) {
    return std::find(report->foreign_globals.begin(), report->foreign_globals.end(), global) !=
           report->foreign_globals.end();
  };
  EXPECT_TRUE(has("__main__.AverageMeter"));
  EXPECT_TRUE(has("numpy.core.multiarray.scalar"));
  EXPECT_FALSE(has("torch._utils._rebuild_tensor_v2"));
  EXPECT_FALSE(has("argparse.Namespace"));
  const std::string text = FormatReport(*report, options);
  for (const char* part :
       {"layers      2", "D=8 Z=4 H=6 N=2", "FFN none", "w=4", "softmax, positions rotary",
        "layernorm, pre-norm", "tied", "byte, 10 symbols", "skipped", "__main__.AverageMeter"}) {
    EXPECT_TRUE(absl::StrContains(text, part)) << part << " not in\n" << text;
  }
}

TEST(Convert, CfgAndDefaultsAreReported) {
  ScratchDir dir;
  auto cfg = ConvertCheckpoint(Options("cfg_dict.pt", dir / "a.safetensors"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->args_origin, "cfg.model");
  EXPECT_EQ(cfg->model.config.max_positions, 32);  // from cfg.task
  ASSERT_EQ(cfg->model.defaults.size(), 1u);
  EXPECT_TRUE(absl::StrContains(cfg->model.defaults[0], "max_target_positions = 32"));

  auto namespace_cfg = ConvertCheckpoint(Options("cfg_namespace.pt", dir / "b.safetensors"));
  ASSERT_TRUE(namespace_cfg.ok()) << namespace_cfg.status();
  EXPECT_EQ(namespace_cfg->args_origin, "cfg.model");

  auto defaults = ConvertCheckpoint(Options("ffn_by_default.pt", dir / "c.safetensors"));
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->model.config.ffn_dim, 6);  // = decoder_hidden_dim, fairseq's default
  ASSERT_EQ(defaults->model.defaults.size(), 1u);
  EXPECT_TRUE(absl::StrContains(defaults->model.defaults[0], "decoder_ffn_embed_dim = 6"));
}

TEST(Convert, CodeInLeftoversIsInertAndReported) {
  ScratchDir dir;
  const std::string marker = "/tmp/seqboat_pwned";
  std::filesystem::remove(marker);
  auto report = ConvertCheckpoint(Options("os_system_leftover.pt", dir / "m.safetensors"));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_NE(
      std::find(report->foreign_globals.begin(), report->foreign_globals.end(), "posix.system"),
      report->foreign_globals.end());
  EXPECT_FALSE(std::filesystem::exists(marker));
}

// fairseq's Dictionary.add_symbol(word, overwrite=True) appends a new id for a repeated
// symbol (the later id wins for encoding), so such a line adds one row to the embedding.
TEST(Convert, DictOverwriteAppendsLikeFairseq) {
  ScratchDir dir;
  auto report = ConvertCheckpoint(
      Options("basic.pt", dir / "m.safetensors", DType::kF32, "dict_overwrite.txt"));
  ASSERT_TRUE(report.ok()) << report.status();  // 5 symbols + 1 overwritten repeat + 4 = 10
  EXPECT_EQ(report->model.config.vocab_size, 10);
}

struct BadCase {
  std::string checkpoint;
  std::vector<std::string> parts;  // each must appear in the message
  DType dtype = DType::kF32;
  std::string dict = "dict.txt";
};

class BadInput : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadInput, IsANamedErrorAndWritesNothing) {
  const BadCase& c = GetParam();
  ScratchDir dir;
  const std::string out = dir / "model.safetensors";
  const std::string marker = "/tmp/seqboat_pwned";
  std::filesystem::remove(marker);
  auto report = ConvertCheckpoint(Options(c.checkpoint, out, c.dtype, c.dict));
  ASSERT_FALSE(report.ok()) << c.checkpoint << " converted";
  for (const std::string& part : c.parts) {
    EXPECT_TRUE(absl::StrContains(report.status().message(), part))
        << "\"" << part << "\" not in: " << report.status().message();
  }
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
  EXPECT_FALSE(std::filesystem::exists(marker));
}

std::string BadCaseName(const ::testing::TestParamInfo<BadCase>& info) {
  std::string name = info.param.checkpoint.substr(0, info.param.checkpoint.find('.'));
  if (info.param.dict != "dict.txt")
    name += "_" + info.param.dict.substr(0, info.param.dict.find('.'));
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(
    Converter, BadInput,
    ::testing::Values(
        BadCase{"bad_missing_data_pkl.pt", {"bad_missing_data_pkl.pt", "missing data.pkl"}},
        BadCase{"bad_short_storage.pt",
                {"storage shorter than the tensor needs", "archive/data/1"}},
        BadCase{"bad_missing_storage.pt", {"archive/data/1", "lacks"}},
        BadCase{"bad_os_system_args.pt", {"\"args\"", "posix.system", "does not evaluate"}},
        BadCase{"bad_eval_model.pt", {"\"model\"", "builtins.eval"}},
        BadCase{"bad_memo_out_of_range.pt",
                {"offset 14", "BINGET", "memo index 99 is out of range"}},
        BadCase{"bad_deep_nesting.pt", {"archive/data.pkl", "nested deeper than 1000 levels"}},
        BadCase{"bad_length_2_62.pt", {"BINUNICODE8", "4611686018427387904 bytes"}},
        BadCase{"bad_no_stop.pt", {"without a STOP"}}, BadCase{"bad_legacy.pt", {"legacy"}},
        BadCase{"bad_not_a_dict.pt", {"top-level object is [1, 2, 3]"}},
        BadCase{"bad_no_args.pt", {"neither \"args\" nor \"cfg\""}},
        BadCase{"bad_reject_adaptive_input.pt", {"args.adaptive_input is True"}},
        BadCase{"bad_reject_adaptive_softmax.pt", {"args.adaptive_softmax_cutoff is '4,8'"}},
        BadCase{"bad_reject_t5.pt", {"args.rel_pos_bias is 't5'"}},
        BadCase{"bad_reject_gelu.pt", {"args.activation_fn is 'gelu'"}},
        BadCase{"bad_reject_input_dim.pt", {"args.decoder_input_dim is 16"}},
        BadCase{"bad_reject_arch.pt", {"args.arch is 'transformer_lm'"}},
        BadCase{"bad_reject_batchnorm.pt", {"args.normalization_type is 'batchnorm'"}},
        BadCase{"bad_reject_local_pos.pt", {"args.local_pos is True"}},
        BadCase{"bad_shape_mismatch.pt",
                {"config/shape mismatch", "mx_proj.weight", "[16, 8]", "[18, 8]", "H=7"}},
        BadCase{"bad_layers_huge.pt",
                {"args.decoder_layers is 1000000000", "state dict holds only 37 entries"}},
        BadCase{"bad_unexpected_tensor.pt",
                {"unexpected state-dict entry", "relative_attention_bias", "rel_pos_bias"}},
        BadCase{"bad_missing_tensor.pt", {"lacks \"decoder.layers.1.slag_layer.h_proj.bias\""}},
        BadCase{"bad_tied_mismatch.pt", {"share_decoder_input_output_embed", "differs"}},
        BadCase{"bad_nonfinite.pt", {"layers.0.slag_layer.move.gamma", "non-finite", "element 3"}},
        BadCase{
            "bad_fp16_overflow.pt", {"move.omega", "overflows F16", "bf16 or fp32"}, DType::kF16},
        BadCase{"basic.pt",
                {"bad_dict_duplicate.txt", "line 4", "duplicate symbol \"33\""},
                DType::kF32,
                "bad_dict_duplicate.txt"},
        BadCase{"basic.pt",
                {"bad_dict_malformed.txt", "line 3", "nocount"},
                DType::kF32,
                "bad_dict_malformed.txt"},
        BadCase{"basic.pt", {"no_such_dict.txt"}, DType::kF32, "no_such_dict.txt"},
        BadCase{"no_such_checkpoint.pt", {"no_such_checkpoint.pt", "cannot open"}},
        BadCase{
            "leftovers.pt", {"dict.txt", "V = 7", "10 rows"}, DType::kF32, "bad_dict_short.txt"}),
    BadCaseName);

TEST(Convert, RefusesToOverwriteItsInput) {
  ScratchDir dir;
  const std::string copy = dir / "checkpoint.pt";
  std::filesystem::copy_file(ConverterFixture("basic.pt"), copy);
  ConvertOptions options = Options("basic.pt", copy);
  options.checkpoint_path = copy;
  auto report = ConvertCheckpoint(options);
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(absl::StrContains(report.status().message(), "choose another --out"));
  EXPECT_EQ(std::filesystem::file_size(copy),
            std::filesystem::file_size(ConverterFixture("basic.pt")));
}

TEST(Inspect, ListsArgsTensorsAndGlobals) {
  auto text = InspectCheckpoint(ConverterFixture("noncontiguous.pt"));
  ASSERT_TRUE(text.ok()) << text.status();
  for (const char* part :
       {"model args from args", "decoder_embed_dim = 8", "adaptive_softmax_cutoff = None",
        "lr = [0.001]", "decoder.embed_tokens.weight  float32 [10, 8]", "shares storage",
        "strides (1, 8)", "offset 7", "torch._utils._rebuild_tensor_v2"}) {
    EXPECT_TRUE(absl::StrContains(*text, part)) << part << " not in\n" << *text;
  }
  auto leftovers = InspectCheckpoint(ConverterFixture("leftovers.pt"));
  ASSERT_TRUE(leftovers.ok());
  EXPECT_TRUE(absl::StrContains(*leftovers, "__main__.AverageMeter  (outside the allow-list"));
  // A checkpoint the converter refuses still inspects, saying why it cannot convert.
  auto hostile = InspectCheckpoint(ConverterFixture("bad_os_system_args.pt"));
  ASSERT_TRUE(hostile.ok());
  EXPECT_TRUE(absl::StrContains(*hostile, "not convertible"));
  EXPECT_TRUE(absl::StrContains(*hostile, "posix.system  (outside the allow-list"));
  auto cfg = InspectCheckpoint(ConverterFixture("cfg_dictconfig.pt"));
  ASSERT_TRUE(cfg.ok());
  EXPECT_TRUE(absl::StrContains(*cfg, "model args from cfg.model")) << *cfg;
  EXPECT_FALSE(InspectCheckpoint(ConverterFixture("bad_missing_data_pkl.pt")).ok());
}

}  // namespace
}  // namespace seqboat::convert
