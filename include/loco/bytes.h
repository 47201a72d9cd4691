// What a run would have sent as fp32 DiLoCo or as DDP: the references every "× fewer bytes"
// is measured against, and the byte fields of summary.json that carry them.
//
// This is the only home of these formulas. The coordinator's byte ledger adds them up round by
// round, DDP's rank 0 and a single run call them at the end of the run, and `loco compare` and
// scripts/results_page.py read the results from summary.json instead of recomputing them
// (docs/compare.md). N is the parameter count, 4N the bytes of an fp32 copy of the parameters.
//
// summary.json's byte fields, the same keys for every kind of run (the coordinator's
// CoordinatorCore::totals(), ddp_run_bytes() below):
//   bytes_up, bytes_down     the method's traffic each way, all workers (ranks), the whole run
//   bytes_total              what the ratios divide by: the method's traffic (DiLoCo: without
//                            the setup pulls and demo's consensus, see docs/dct.md)
//   fp32_diloco_bytes        what fp32 DiLoCo would have sent: the sum of
//                            fp32_diloco_round_bytes over the rounds; null without rounds (DDP)
//   ddp_bytes                what DDP would have sent: ddp_step_bytes times the steps (DiLoCo:
//                            rounds × H, W the workers or the sites)
//   ratio_vs_diloco_fp32     fp32_diloco_bytes / bytes_total ("× fewer than fp32 DiLoCo")
//   ratio_vs_ddp             ddp_bytes / bytes_total; null where nothing was sent
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>

#include "loco/config.h"

namespace loco {

// Parameters of the GPT that `model` describes: 2·vocab·width + 12·layers·width² (embedding,
// untied head, 4 attention and 2 MLP matrices of width² and 4·width² per block, no biases and no
// norm weights). Equals GPT(model)->num_params() (tests/test_report.cpp checks it).
int64_t param_count(const ModelConfig& model);

// fp32 DiLoCo, one round, all workers together: each of the `reporters` workers whose
// pseudo-gradient went into the round sends its full Δ up (4N bytes) and pulls the full new θ
// down (4N): reporters · 2 · 4N. (docs/design.md "The algorithms", "DiLoCo": the upload is the
// encoded Δᵢ, the download the new θ or the encoded average; fp32 sends them whole.)
double fp32_diloco_round_bytes(int64_t num_params, int64_t reporters);

// DDP, one step, all `ranks` together, both ways: a ring all-reduce of the 4N-byte fp32 gradient
// sends 2(W−1)/W · 4N bytes per rank and receives as many (docs/design.md "The algorithms",
// "DDP (baseline)"; the bytes_up = bytes_down each rank logs, include/loco/ddp.h), so
// 2 · 2(W−1)/W · 4N · W = 4(W−1) · 4N. 0 for one rank, which sends nothing.
double ddp_step_bytes(int64_t num_params, int64_t ranks);

// summary.json's byte fields (above) for a run without a coordinator: `ranks` ranks of a model of
// `num_params` parameters all-reduced `steps` steps; `up_per_rank` / `down_per_rank` what one rank
// counted sending and receiving over them (every rank moves the same). A single run is one rank
// that sent nothing: ddp_bytes 0 and no ratios. fp32_diloco_bytes and its ratio are null (no
// rounds).
nlohmann::json ddp_run_bytes(int64_t num_params, int64_t ranks, int64_t steps, double up_per_rank,
                             double down_per_rank);

}  // namespace loco
