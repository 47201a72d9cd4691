// How one worker's training meets the others': the hooks the Trainer calls, and the strategies.
//
//   single  no synchronisation (one process)
//   ddp     gradients all-reduced every step through c10d (Gloo on CPU, NCCL on CUDA)
//   diloco  every sync.inner_steps steps, the pseudo-gradient goes to the coordinator, which
//           averages it, applies the outer Nesterov step and sends back the new parameters
//   demo    decoupled DCT momentum (docs/design.md "Decoupled DCT momentum")
//
// A strategy never owns the model; it reads and writes the Trainer's flat parameters and
// gradients (trainer.params()).
#pragma once

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "loco/config.h"

namespace loco {

class Trainer;
struct Checkpoint;

// What a stop signal (a schedule taking this member down, Ctrl-C) may ask of a member of a
// coordinated run before it leaves, shared between the strategy and the signal's thread
// (src/cli/main.cpp). A lone member (sync.lone train, training alone) holds work nobody else
// has: the strategy sets `can_hand_over` while it is alone; the signal's thread then sets
// `requested` instead of leaving at once, and at its next step the strategy pushes its
// pseudo-gradient since its anchor as the round's update (the round closes with it alone),
// then ends training (docs/multisite.md "A lone member").
struct StopRequest {
  std::atomic<bool> can_hand_over{false}, requested{false};
};

class Sync {
 public:
  virtual ~Sync() = default;
  // Once, after the model, optimizer and data are ready (and after a resume). May replace the
  // parameters (a DiLoCo worker pulls the global state here).
  virtual void start(Trainer& trainer) {}
  // After backward, before clipping and the optimizer step (DDP all-reduces gradients here).
  virtual void after_backward(Trainer& trainer) {}
  // After the optimizer step. May add fields to the step's metrics record (bytes_up,
  // bytes_down, round, sync_s, ...).
  virtual void after_step(Trainer& trainer, nlohmann::json& record) {}
  // Once, when training ends normally.
  virtual void finish(Trainer& trainer) {}
  // Whether the strategy says when the run ends (sync.lone train, sync.round_seconds: rounds and
  // inner steps are decoupled, the run ends at its token budget) instead of train.max_steps.
  virtual bool elastic() const { return false; }
  // elastic(): whether the run is over (the coordinator closed its last round); asked after every
  // step.
  virtual bool run_over() const { return false; }
  // Coordinated runs: claims the next data lease now (a site's rank 0 in elastic rounds, whose
  // ranks would otherwise run out of their share between syncs).
  virtual void refill_data(Trainer& trainer) {}
  // Coordinated members: the stop request this strategy keeps up to date and answers (above).
  virtual void watch_stop(std::shared_ptr<StopRequest> stop) {}
  // Adds the strategy's own state to the trainer's checkpoint (tensors named "sync.*").
  virtual void save_state(Trainer& trainer, std::map<std::string, torch::Tensor>& out) {}
  // A member restarted with --resume: its own newest checkpoint (read from `path`), which start()
  // restores in full
  // when it was written at a moment the method can go on from exactly and the coordinator is at
  // its round (docs/faults.md, "Pause and exact resume"); otherwise start() rejoins as before.
  virtual void resume_from(std::shared_ptr<const Checkpoint> own, const std::string& path) {}
  // Whether this process writes checkpoints and the final evaluation (DDP: rank 0 only).
  virtual bool is_primary() const { return true; }
  // Once at the end of a run, on the primary: the method's fields of the run's summary.json (the
  // byte fields of include/loco/bytes.h, over the whole run, and `tokens`, the run's global
  // count). Null (the default) when the run's summary is not this process's to write: a DiLoCo
  // worker or a site of a multi-site run, whose coordinator writes it.
  virtual nlohmann::json summary(Trainer& trainer) { return nullptr; }
};

}  // namespace loco
