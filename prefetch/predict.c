/* Next-step page predictors (prefetch/predict.h). */
#define _GNU_SOURCE /* qsort_r */
#include "prefetch/predict.h"

#include <stdlib.h>
#include <string.h>

enum { DECAY_TABLE = 64 }; /* 0.7^64 < 1e-9: older reads weigh nothing */
static const float history_decay = 0.7f;

static const char *const predictor_names[IKV_PREDICTOR_COUNT] = {"lru_no_prefetch", "history",   "policy",
                                                                  "score_margin",    "hints",     "belady"};
const char *ikv_predictor_name(int p) { return p >= 0 && p < IKV_PREDICTOR_COUNT ? predictor_names[p] : NULL; }

ikv_status ikv_predictor_parse(const char *name, ikv_predictor *out) {
  if (!name || !out) return IKV_E_NULL;
  for (int p = 0; p < IKV_PREDICTOR_COUNT; p++)
    if (!strcmp(name, predictor_names[p])) {
      *out = (ikv_predictor)p;
      return IKV_OK;
    }
  return IKV_E_INVALID;
}

struct ikv_history {
  uint32_t max_ids, max_reads;
  uint32_t now;           /* steps closed so far */
  float *freq;            /* [id] as of step stamp[id] */
  uint32_t *stamp;        /* [id] */
  uint8_t *mark;          /* [id] scratch of ikv_predict_next, all 0 between calls */
  uint32_t *ring;         /* [IKV_HISTORY_STEPS][max_reads]: reads of recent steps */
  uint32_t ring_n[IKV_HISTORY_STEPS];
  int recorded;           /* the running step has reads in its ring slot */
  float pow_decay[DECAY_TABLE];
};

ikv_status ikv_history_create(uint32_t max_ids, uint32_t max_reads, ikv_history **out) {
  if (!out) return IKV_E_NULL;
  if (!max_ids || !max_reads) return IKV_E_INVALID;
  ikv_history *h = calloc(1, sizeof(*h));
  if (!h) return IKV_E_NO_MEMORY;
  h->max_ids = max_ids, h->max_reads = max_reads;
  h->freq = calloc(max_ids, sizeof(float));
  h->stamp = calloc(max_ids, sizeof(uint32_t));
  h->mark = calloc(max_ids, 1);
  h->ring = malloc(sizeof(uint32_t) * IKV_HISTORY_STEPS * (size_t)max_reads);
  if (!h->freq || !h->stamp || !h->mark || !h->ring) {
    ikv_history_destroy(h);
    return IKV_E_NO_MEMORY;
  }
  h->pow_decay[0] = 1.0f;
  for (int k = 1; k < DECAY_TABLE; k++) h->pow_decay[k] = h->pow_decay[k - 1] * history_decay;
  *out = h;
  return IKV_OK;
}

void ikv_history_destroy(ikv_history *h) {
  if (!h) return;
  free(h->freq), free(h->stamp), free(h->mark), free(h->ring);
  free(h);
}

/* Frequency of id as of step `at` (decay applied lazily). */
static float freq_at(const ikv_history *h, uint32_t id, uint32_t at) {
  uint32_t age = at - h->stamp[id];
  return age < DECAY_TABLE ? h->freq[id] * h->pow_decay[age] : 0.0f;
}

ikv_status ikv_history_record(ikv_history *h, const uint32_t *ids, uint32_t n) {
  if (!h || (n && !ids)) return IKV_E_NULL;
  const uint32_t s = h->now % IKV_HISTORY_STEPS, have = h->recorded ? h->ring_n[s] : 0;
  if (n > h->max_reads - have) return IKV_E_CAPACITY;
  for (uint32_t i = 0; i < n; i++)
    if (ids[i] >= h->max_ids) return IKV_E_RANGE;
  memcpy(h->ring + (size_t)s * h->max_reads + have, ids, sizeof(uint32_t) * n);
  h->ring_n[s] = have + n, h->recorded = 1;
  for (uint32_t i = 0; i < n; i++) {
    h->freq[ids[i]] = freq_at(h, ids[i], h->now) + 1.0f;
    h->stamp[ids[i]] = h->now;
  }
  return IKV_OK;
}

void ikv_history_end_step(ikv_history *h) {
  if (!h) return;
  if (!h->recorded) h->ring_n[h->now % IKV_HISTORY_STEPS] = 0; /* a step that read nothing */
  h->recorded = 0;
  h->now++;
}

float ikv_history_score(const ikv_history *h, uint32_t id) {
  return h && id < h->max_ids ? freq_at(h, id, h->now) : 0.0f;
}

static int by_score_desc(const void *a, const void *b, void *ctx) {
  const ikv_history *h = ctx;
  const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  const float fx = freq_at(h, x, h->now), fy = freq_at(h, y, h->now);
  if (fx != fy) return fx > fy ? -1 : 1;
  return x < y ? -1 : x > y;
}

uint32_t ikv_predict_next(ikv_history *h, const uint32_t *first, uint32_t n_first, uint32_t *cand, uint32_t cap) {
  if (!h || !cand) return 0;
  uint32_t n = 0;
  for (uint32_t i = 0; i < n_first && n < cap; i++)
    if (first[i] < h->max_ids && !h->mark[first[i]]) h->mark[first[i]] = 1, cand[n++] = first[i];
  const uint32_t n_first_kept = n;
  /* the last closed steps, oldest first */
  for (uint32_t k = IKV_HISTORY_STEPS; k-- > 0 && n < cap;) {
    if (k + 1 > h->now) continue;
    const uint32_t s = (h->now - 1 - k) % IKV_HISTORY_STEPS;
    if (h->recorded && s == h->now % IKV_HISTORY_STEPS) continue; /* overwritten by the running step */
    const uint32_t *reads = h->ring + (size_t)s * h->max_reads;
    for (uint32_t r = 0; r < h->ring_n[s] && n < cap; r++)
      if (!h->mark[reads[r]]) h->mark[reads[r]] = 1, cand[n++] = reads[r];
  }
  for (uint32_t k = 0; k < n; k++) h->mark[cand[k]] = 0;
  qsort_r(cand + n_first_kept, n - n_first_kept, sizeof(uint32_t), by_score_desc, h);
  return n;
}
