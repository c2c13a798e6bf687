#pragma once
// One gaze selection step of a frame (spec §6.4): params and launch declarations (no torch, no
// CUDA headers). The ground truth is autogaze_ext.reference.select_step; see its docstring for
// the meaning of every field. EOS is vocab - 1.

#include <cstdint>

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace autogaze::select {

struct Params {
  // inputs
  const float* logits;       // (B, K, V): heads at the last fed token
  const float* loss_pred;    // (B, K): task-loss predictions
  const float* requirement;  // (B,) or nullptr: no task-loss stop
  const float* uniforms;     // (B, K) in [0, 1) or nullptr: greedy
  float temperature;         // sampling only
  int top_k;                 // sampling only
  int64_t batch;
  int k, vocab;
  int64_t budget;
  int64_t token_width;  // columns of `tokens`, >= budget + k
  bool first;           // the frame's first step: slot 0 is never stopped
  bool coupled;         // official batch coupling

  // frame state, updated in place (bools as uint8)
  uint8_t* used;          // (B, V)
  int64_t* n;             // (B,)
  uint8_t* finished;      // (B,)
  uint8_t* done;          // (B,)
  int64_t* tokens;        // (B, token_width)
  int64_t* leftover_ids;  // (B, K)
  int64_t* leftover_len;  // (B,)

  // outputs and workspace
  int64_t* fed;    // (B, K): ids to feed next, EOS where done
  float* scores;   // (B, K, V) workspace
  int64_t* picks;  // (B, K) workspace: raw pick of each head
  uint8_t* selected;  // (B, K) workspace
};

void select_cpu(const Params& params);

// Enqueues the step on `stream`. Uncoupled: one block per sample; coupled: one block for the batch.
void select_cuda(const Params& params, CUstream_st* stream);

}  // namespace autogaze::select
