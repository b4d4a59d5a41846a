/*
 * Predictors of the pages the next decode step reads, shared by the
 * runtime's prefetcher and the hit-rate simulator (one implementation, so
 * what the simulator predicts is what the runtime does).
 *
 * An ikv_history keeps, per page id, a read frequency that decays by 0.7 a
 * step, and the reads of the last 8 steps. ikv_predict_next ranks the next
 * step's candidates: pages the caller puts first (scheduler hints or score
 * near-misses), then the pages of those 8 steps by decayed frequency.
 *
 * Conventions as in runtime/ikv_base.h. A history is owned by its creator
 * and used by one thread at a time.
 */
#ifndef IKV_PREFETCH_PREDICT_H
#define IKV_PREFETCH_PREDICT_H

#include "runtime/ikv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ikv_predictor {
  IKV_PREDICT_NONE = 0, /* "lru_no_prefetch": demand fetch, least recently used leaves */
  IKV_PREDICT_HISTORY,  /* "history": pages of the last 8 steps by decayed frequency; LRU */
  IKV_PREDICT_POLICY,   /* "policy": history, and pages of pinned kinds never leave once in
                           (simulator: system and memory spans; runtime: sinks, ALWAYS,
                           GLOBAL and the recent window) */
  IKV_PREDICT_MARGIN,   /* "score_margin": pages scored just under the cut first, then history */
  IKV_PREDICT_HINTS,    /* "hints": the scheduler's hints of the step first, then history */
  IKV_PREDICT_BELADY,   /* "belady": knows the future (simulator only): prefetches the next
                           8 steps' pages, soonest first, and evicts the page used farthest
                           ahead (the reference the others are held to) */
  IKV_PREDICTOR_COUNT
} ikv_predictor;

/* "lru_no_prefetch", "history", "policy", "score_margin", "hints", "belady";
 * NULL if out of range. */
const char *ikv_predictor_name(int predictor);
/* The predictor named `name`; IKV_E_INVALID if none is. */
ikv_status ikv_predictor_parse(const char *name, ikv_predictor *out);

enum { IKV_HISTORY_STEPS = 8 };

typedef struct ikv_history ikv_history;

/* A history of page ids below max_ids, a step reading at most max_reads
 * pages (a page read twice counts twice). */
ikv_status ikv_history_create(uint32_t max_ids, uint32_t max_reads, ikv_history **out);
void ikv_history_destroy(ikv_history *history);
/* Adds reads of the step now running (ikv_history_end_step closes it).
 * IKV_E_RANGE for an id out of range, IKV_E_CAPACITY for more than
 * max_reads: nothing is recorded then. */
ikv_status ikv_history_record(ikv_history *history, const uint32_t *ids, uint32_t n);
/* Closes the step: every frequency decays. */
void ikv_history_end_step(ikv_history *history);
/* The decayed read frequency of a page now (0 for one never read). */
float ikv_history_score(const ikv_history *history, uint32_t id);

/* Candidates for the next step, best first, at most cap into cand: the
 * distinct ids of first[0, n_first) (ids out of range passed over), then the
 * distinct pages read during the last IKV_HISTORY_STEPS steps, by decayed
 * frequency (ties: lower id first). Returns how many. */
uint32_t ikv_predict_next(ikv_history *history, const uint32_t *first, uint32_t n_first, uint32_t *cand,
                          uint32_t cap);

#ifdef __cplusplus
}
#endif
#endif /* IKV_PREFETCH_PREDICT_H */
