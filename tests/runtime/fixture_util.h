// Loading of the reference fixtures (tests/fixtures, written by tests/reference) for tests.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/util/npy.h"

namespace seqboat::testing {

inline std::string FixturesDir() { return SEQBOAT_FIXTURES_DIR; }

// Model folders under tests/fixtures that hold a model.safetensors, sorted.
inline std::vector<std::string> FixtureModels() {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(FixturesDir(), error)) {
    if (entry.is_directory() && std::filesystem::exists(entry.path() / "model.safetensors")) {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// One teacher-forced sequence and the reference's expectations for one EMA horizon.
struct Expected {
  std::vector<int32_t> tokens;       // [T]
  std::vector<float> logits;         // [T, V]
  std::vector<uint8_t> activations;  // [L, T]
  std::vector<float> confidences;    // [L, T]
};

inline int CountSequences(const std::string& model) {
  int k = 0;
  while (std::filesystem::exists(absl::StrCat(FixturesDir(), "/", model, "/seq", k, ".tokens.npy")))
    ++k;
  return k;
}

inline Expected LoadExpected(const std::string& model, int seq, const std::string& horizon) {
  const std::string base = absl::StrCat(FixturesDir(), "/", model, "/seq", seq, ".");
  Expected e;
  auto tokens = ReadNpy(base + "tokens.npy");
  auto logits = ReadNpy(base + horizon + ".logits.npy");
  auto activations = ReadNpy(base + horizon + ".activations.npy");
  auto confidences = ReadNpy(base + horizon + ".confidences.npy");
  EXPECT_TRUE(tokens.ok() && logits.ok() && activations.ok() && confidences.ok())
      << "fixture files of " << base;
  if (!tokens.ok() || !logits.ok() || !activations.ok() || !confidences.ok()) return e;
  e.tokens = *tokens->AsInt32();
  e.logits = *logits->AsFloat();
  e.activations = *activations->AsUint8();
  e.confidences = *confidences->AsFloat();
  return e;
}

// The per-layer activation biases the reference wrote fixtures for (manifest.json's
// "activation_biases" of the model; none for most models): entry j goes with the files
// seq{k}.exact.bias{j}.*.npy.
inline std::vector<std::vector<float>> FixtureActivationBiases(const std::string& model) {
  std::ifstream in(FixturesDir() + "/manifest.json");
  const nlohmann::json manifest = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  std::vector<std::vector<float>> biases;
  if (!manifest.is_object() || !manifest.contains("models")) {
    ADD_FAILURE() << "manifest.json under " << FixturesDir() << " is unreadable";
    return biases;
  }
  for (const nlohmann::json& entry : manifest["models"]) {
    if (entry.value("folder", "") != model || !entry.contains("activation_biases")) continue;
    for (const nlohmann::json& layers : entry["activation_biases"])
      biases.push_back(layers.get<std::vector<float>>());
  }
  return biases;
}

}  // namespace seqboat::testing
