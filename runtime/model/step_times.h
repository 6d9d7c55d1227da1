// Where one Model::Step spent its wall time, by part (seconds, steady clock, this process). Filled
// by Model::Step when ModelOptions::step_times is set; the engine turns it into StepPhaseTimes.
// The clock is read a few times per layer (~20 ns each), so the bookkeeping costs nothing that
// shows next to a layer's work.
#pragma once

namespace tritmoe {

struct ModelStepTimes {
  double total_s = 0;        // the whole Step, from its checks to the last logits row
  double attention_s = 0;    // MlaAttention of every layer
  double moe_compute_s = 0;  // MoE layers: router, routed experts, shared expert, and the
                             // exchange when it only copies locally (one rank)
  double dispatch_s = 0;     // ExpertExchange::Dispatch of an exchange that communicates
  double combine_s = 0;      // ExpertExchange::Combine of an exchange that communicates
};

}  // namespace tritmoe
