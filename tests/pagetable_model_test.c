/* Model-based random test of the block-table manager: seeded random operations
 * (append, fork, free, truncate, precision change, tier moves, pins, span
 * edits), each outcome predicted by a simple reference model, and the whole
 * table checked against the model after every step. IKV_SEED=<n> replays. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pagetable/pagetable.h"
#include "tests/cmocka_all.h"

#define P 16u
#define MAX_SEQS 12
#define STEPS 100000
#define MAX_PAGES 224 /* sum of the pool capacities below */
#define MAX_SPANS 64

static const uint32_t capacity[IKV_TIER_COUNT][IKV_PRECISION_COUNT] = {
    [IKV_TIER_GPU] = {[IKV_FP16] = 64, [IKV_INT8] = 32, [IKV_INT4] = 32},
    [IKV_TIER_HOST] = {[IKV_FP16] = 64, [IKV_INT8] = 32},
};
static const ikv_precision seq_precisions[] = {IKV_FP16, IKV_INT8, IKV_INT4};

typedef struct mspan {
  ikv_span_id id;
  ikv_span span;
} mspan;

typedef struct mseq {
  ikv_seq_id id;
  ikv_precision precision;
  uint32_t tokens, n_pages;
  ikv_page_id pages[4096];
  uint32_t n_spans;
  mspan spans[MAX_SPANS];
} mseq;

typedef struct mpage {
  int live;
  ikv_precision precision;
  int resident[IKV_TIER_COUNT];
  uint32_t pins;
} mpage;

typedef struct model {
  ikv_pagetable *pt;
  uint64_t rng;
  uint32_t n_seqs;
  mseq seqs[MAX_SEQS];
  mpage pages[MAX_PAGES];
  uint64_t cow_copies, precision_changes;
} model;

static uint64_t next(model *m) {
  m->rng ^= m->rng << 13;
  m->rng ^= m->rng >> 7;
  m->rng ^= m->rng << 17;
  return m->rng;
}
static uint32_t below(model *m, uint32_t n) { return (uint32_t)(next(m) % n); }

static uint32_t refcount(const model *m, ikv_page_id page) {
  uint32_t rc = 0;
  for (uint32_t s = 0; s < m->n_seqs; s++)
    for (uint32_t i = 0; i < m->seqs[s].n_pages; i++) rc += m->seqs[s].pages[i] == page;
  return rc;
}

static uint32_t pool_used(const model *m, int tier, int prec) {
  uint32_t used = 0;
  for (int p = 0; p < MAX_PAGES; p++)
    used += m->pages[p].live && m->pages[p].resident[tier] && (int)m->pages[p].precision == prec;
  return used;
}
static uint32_t pool_free(const model *m, int tier, int prec) {
  return capacity[tier][prec] - pool_used(m, tier, prec);
}

static void drop_ref(model *m, ikv_page_id page) {
  if (refcount(m, page) == 0) memset(&m->pages[page], 0, sizeof(mpage));
}

/* A page the table just handed out must be new to the model. */
static void adopt(model *m, ikv_page_id page, ikv_precision prec) {
  assert_true(page < MAX_PAGES);
  assert_false(m->pages[page].live);
  m->pages[page] = (mpage){.live = 1, .precision = prec, .resident = {1, 0}};
}

static mseq *random_seq(model *m) { return m->n_seqs ? &m->seqs[below(m, m->n_seqs)] : NULL; }

static ikv_page_id random_live_page(model *m) {
  mseq *s = random_seq(m);
  if (!s || !s->n_pages) return 4242; /* an id no page has: exercises UNKNOWN_PAGE */
  return s->pages[below(m, s->n_pages)];
}

static void op_create(model *m) {
  ikv_precision prec = seq_precisions[below(m, 3)];
  ikv_seq_id id;
  ikv_status st = ikv_pt_seq_create(m->pt, prec, &id);
  if (m->n_seqs == MAX_SEQS) {
    assert_int_equal(st, IKV_E_CAPACITY);
    return;
  }
  assert_int_equal(st, IKV_OK);
  mseq *s = &m->seqs[m->n_seqs++];
  memset(s, 0, sizeof(*s));
  s->id = id;
  s->precision = prec;
}

static void op_append(model *m) {
  mseq *s = random_seq(m);
  if (!s) return;
  uint32_t n = 1 + below(m, 40);
  if (s->tokens + n > 4096 * P) return;
  uint32_t offset = s->tokens % P;
  ikv_page_id last = offset ? s->pages[s->n_pages - 1] : 0;
  int cow = offset && refcount(m, last) > 1;
  uint32_t new_pages = (s->tokens + n + P - 1) / P - s->n_pages;
  ikv_precision cow_prec = cow ? m->pages[last].precision : s->precision;
  ikv_status want = IKV_OK;
  if (offset && !m->pages[last].resident[IKV_TIER_GPU]) want = IKV_E_NOT_RESIDENT;
  else if (pool_free(m, IKV_TIER_GPU, s->precision) < new_pages + (cow && cow_prec == s->precision) ||
           (cow && cow_prec != s->precision && pool_free(m, IKV_TIER_GPU, cow_prec) < 1))
    want = IKV_E_CAPACITY;
  int64_t map[40];
  uint8_t prec[40];
  ikv_pt_copy copy;
  assert_int_equal(ikv_pt_seq_append(m->pt, s->id, n, map, prec, &copy), want);
  if (want != IKV_OK) return;
  assert_int_equal(copy.bytes != 0, cow);
  if (cow) {
    assert_int_equal(copy.src_page, last);
    adopt(m, copy.dst_page, cow_prec);
    s->pages[s->n_pages - 1] = copy.dst_page;
    m->cow_copies++;
  }
  ikv_pt_seq_info info;
  assert_int_equal(ikv_pt_seq_get_info(m->pt, s->id, &info), IKV_OK);
  assert_int_equal(info.pages, s->n_pages + new_pages);
  assert_int_equal(ikv_pt_seq_pages(m->pt, s->id, s->n_pages, new_pages, s->pages + s->n_pages), IKV_OK);
  for (uint32_t i = 0; i < new_pages; i++) adopt(m, s->pages[s->n_pages + i], s->precision);
  s->n_pages += new_pages;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t t = s->tokens + i;
    ikv_pt_page_info pi;
    assert_int_equal(ikv_pt_page_get_info(m->pt, s->pages[t / P], &pi), IKV_OK);
    assert_int_equal(map[i], (int64_t)pi.slot[IKV_TIER_GPU] * P + t % P);
    assert_int_equal(prec[i], pi.precision);
  }
  s->tokens += n;
}

static void op_fork(model *m) {
  mseq *parent = random_seq(m);
  if (!parent) return;
  ikv_seq_id id;
  ikv_status st = ikv_pt_seq_fork(m->pt, parent->id, &id);
  if (m->n_seqs == MAX_SEQS) {
    assert_int_equal(st, IKV_E_CAPACITY);
    return;
  }
  assert_int_equal(st, IKV_OK);
  mseq *child = &m->seqs[m->n_seqs++];
  *child = *parent;
  child->id = id;
}

static void op_free(model *m) {
  if (!m->n_seqs) return;
  uint32_t k = below(m, m->n_seqs);
  mseq gone = m->seqs[k];
  assert_int_equal(ikv_pt_seq_free(m->pt, gone.id), IKV_OK);
  assert_int_equal(ikv_pt_seq_free(m->pt, gone.id), IKV_E_UNKNOWN_SEQ);
  m->seqs[k] = m->seqs[--m->n_seqs];
  for (uint32_t i = 0; i < gone.n_pages; i++) drop_ref(m, gone.pages[i]);
}

static void op_truncate(model *m) {
  mseq *s = random_seq(m);
  if (!s) return;
  uint32_t to = s->tokens ? s->tokens - below(m, s->tokens < 48 ? s->tokens + 1 : 48) : 0;
  assert_int_equal(ikv_pt_seq_truncate(m->pt, s->id, s->tokens + 1), IKV_E_RANGE);
  assert_int_equal(ikv_pt_seq_truncate(m->pt, s->id, to), IKV_OK);
  uint32_t keep = (to + P - 1) / P;
  while (s->n_pages > keep) {
    ikv_page_id page = s->pages[--s->n_pages];
    drop_ref(m, page);
  }
  s->tokens = to;
  uint32_t kept = 0;
  for (uint32_t i = 0; i < s->n_spans; i++) {
    mspan sp = s->spans[i];
    if (sp.span.start >= to) continue;
    if (sp.span.end > to) sp.span.end = to;
    s->spans[kept++] = sp;
  }
  s->n_spans = kept;
}

static void op_set_precision(model *m) {
  ikv_page_id page = random_live_page(m);
  ikv_precision to = (ikv_precision)below(m, IKV_PRECISION_COUNT);
  ikv_pt_move mv;
  ikv_status st = ikv_pt_page_set_precision(m->pt, page, to, &mv);
  if (page >= MAX_PAGES) {
    assert_int_equal(st, IKV_E_UNKNOWN_PAGE);
    return;
  }
  mpage *pg = &m->pages[page];
  ikv_status want = IKV_OK;
  if (pg->precision != to)
    for (int t = 0; t < IKV_TIER_COUNT; t++)
      if (pg->resident[t] && pool_free(m, t, to) == 0) want = IKV_E_CAPACITY;
  assert_int_equal(st, want);
  if (want != IKV_OK) return;
  m->precision_changes += pg->precision != to;
  pg->precision = to;
}

static void op_tier(model *m) {
  ikv_page_id page = random_live_page(m);
  ikv_tier tier = (ikv_tier)below(m, IKV_TIER_COUNT);
  if (page >= MAX_PAGES) return;
  mpage *pg = &m->pages[page];
  ikv_pt_copy copy;
  if (below(m, 2)) { /* give the page a copy in tier */
    ikv_status want = pg->resident[tier] || pool_free(m, tier, pg->precision) ? IKV_OK : IKV_E_CAPACITY;
    assert_int_equal(ikv_pt_page_make_resident(m->pt, page, tier, &copy), want);
    if (want == IKV_OK) {
      assert_int_equal(copy.bytes == 0, pg->resident[tier]);
      pg->resident[tier] = 1;
    }
    return;
  }
  ikv_status want = IKV_OK;
  if (!pg->resident[tier]) want = IKV_E_NOT_RESIDENT;
  else if (!pg->resident[!tier]) want = IKV_E_LAST_COPY;
  else if (tier == IKV_TIER_GPU && pg->pins) want = IKV_E_PINNED;
  assert_int_equal(ikv_pt_page_release(m->pt, page, tier), want);
  if (want == IKV_OK) pg->resident[tier] = 0;
}

static void op_pin(model *m) {
  ikv_page_id page = random_live_page(m);
  if (page >= MAX_PAGES) return;
  mpage *pg = &m->pages[page];
  if (below(m, 2)) {
    assert_int_equal(ikv_pt_page_pin(m->pt, page), IKV_OK);
    pg->pins++;
  } else {
    assert_int_equal(ikv_pt_page_unpin(m->pt, page), pg->pins ? IKV_OK : IKV_E_INVALID);
    if (pg->pins) pg->pins--;
  }
}

static void op_span(model *m) {
  mseq *s = random_seq(m);
  if (!s) return;
  uint32_t choice = below(m, 3);
  if (choice == 2 && s->n_spans) { /* remove */
    uint32_t k = below(m, s->n_spans);
    assert_int_equal(ikv_pt_span_remove(m->pt, s->id, s->spans[k].id), IKV_OK);
    memmove(&s->spans[k], &s->spans[k + 1], sizeof(mspan) * (s->n_spans - k - 1));
    s->n_spans--;
    return;
  }
  ikv_span sp = {.kind = (ikv_span_kind)below(m, IKV_SPAN_KIND_COUNT),
                 .policy = (ikv_span_policy)below(m, IKV_POLICY_COUNT),
                 .score = (float)below(m, 1000) / 1000.0f,
                 .pinned_precision = IKV_UNPINNED_PRECISION};
  sp.start = below(m, s->tokens + 2);
  sp.end = sp.start + 1 + below(m, 40);
  ikv_status want = sp.end <= s->tokens ? IKV_OK : IKV_E_RANGE;
  if (choice == 1 && s->n_spans) { /* update */
    mspan *target = &s->spans[below(m, s->n_spans)];
    assert_int_equal(ikv_pt_span_update(m->pt, s->id, target->id, &sp), want);
    if (want == IKV_OK) target->span = sp;
    return;
  }
  if (s->n_spans == MAX_SPANS) return;
  ikv_span_id id;
  assert_int_equal(ikv_pt_span_add(m->pt, s->id, &sp, &id), want);
  if (want == IKV_OK) s->spans[s->n_spans++] = (mspan){.id = id, .span = sp};
}

/* The whole table against the model. */
static void check(const model *m) {
  ikv_pt_stats st;
  assert_int_equal(ikv_pt_get_stats(m->pt, &st), IKV_OK);
  assert_int_equal(st.sequences, m->n_seqs);
  assert_int_equal(st.cow_copies, m->cow_copies);
  assert_int_equal(st.precision_changes, m->precision_changes);
  uint32_t live = 0, shared = 0;
  uint8_t slot_owner[IKV_TIER_COUNT][IKV_PRECISION_COUNT][64];
  memset(slot_owner, 0, sizeof(slot_owner));
  for (ikv_page_id p = 0; p < MAX_PAGES; p++) {
    const mpage *pg = &m->pages[p];
    ikv_pt_page_info pi;
    ikv_status got = ikv_pt_page_get_info(m->pt, p, &pi);
    uint32_t rc = refcount(m, p);
    assert_int_equal(rc > 0, pg->live);
    if (!pg->live) {
      assert_int_equal(got, IKV_E_UNKNOWN_PAGE); /* no leak: unreferenced pages are gone */
      continue;
    }
    assert_int_equal(got, IKV_OK);
    live++;
    shared += rc > 1;
    assert_int_equal(pi.refcount, rc);
    assert_int_equal(pi.precision, pg->precision);
    assert_int_equal(pi.pins, pg->pins);
    for (int t = 0; t < IKV_TIER_COUNT; t++) {
      assert_int_equal(pi.slot[t] != IKV_NO_SLOT, pg->resident[t]);
      if (!pg->resident[t]) continue;
      assert_true(pi.slot[t] >= 0 && (uint32_t)pi.slot[t] < capacity[t][pg->precision]);
      assert_int_equal(slot_owner[t][pg->precision][pi.slot[t]]++, 0); /* no slot owned twice */
      ikv_page_id owner;
      assert_int_equal(ikv_pt_slot_owner(m->pt, (ikv_tier)t, pg->precision, pi.slot[t], &owner), IKV_OK);
      assert_int_equal(owner, p);
    }
  }
  assert_int_equal(st.live_pages, live);
  assert_int_equal(st.shared_pages, shared);
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      assert_int_equal(st.pages_used[t][p], pool_used(m, t, p));
      assert_int_equal(st.pages_free[t][p], capacity[t][p] - pool_used(m, t, p));
    }
  ikv_seq_id ids[MAX_SEQS];
  int all_on_gpu = 1;
  uint32_t total = 0;
  for (uint32_t s = 0; s < m->n_seqs; s++) {
    const mseq *ms = &m->seqs[s];
    ids[s] = ms->id;
    ikv_pt_seq_info info;
    assert_int_equal(ikv_pt_seq_get_info(m->pt, ms->id, &info), IKV_OK);
    assert_int_equal(info.tokens, ms->tokens);
    assert_int_equal(info.pages, ms->n_pages);
    assert_int_equal(info.spans, ms->n_spans);
    static ikv_page_id pages[4096];
    assert_int_equal(ikv_pt_seq_pages(m->pt, ms->id, 0, ms->n_pages, pages), IKV_OK);
    assert_memory_equal(pages, ms->pages, sizeof(ikv_page_id) * ms->n_pages);
    for (uint32_t i = 0; i < ms->n_spans; i++) {
      ikv_span got;
      assert_int_equal(ikv_pt_span_get(m->pt, ms->id, ms->spans[i].id, &got), IKV_OK);
      assert_memory_equal(&got, &ms->spans[i].span, sizeof(got));
    }
    for (uint32_t i = 0; i < ms->n_pages; i++) all_on_gpu &= m->pages[ms->pages[i]].resident[IKV_TIER_GPU];
    total += ms->n_pages;
  }
  static int32_t indptr[MAX_SEQS + 1], idx[MAX_SEQS * 4096], last[MAX_SEQS];
  static uint8_t prec[MAX_SEQS * 4096];
  ikv_status want = all_on_gpu ? IKV_OK : IKV_E_NOT_RESIDENT;
  assert_int_equal(ikv_pt_export_csr(m->pt, ids, m->n_seqs, IKV_TIER_GPU, indptr, idx,
                                     MAX_SEQS * 4096, last, prec), want);
  if (want != IKV_OK) return;
  assert_int_equal(indptr[m->n_seqs], total);
  for (uint32_t s = 0; s < m->n_seqs; s++) {
    const mseq *ms = &m->seqs[s];
    assert_int_equal(indptr[s + 1] - indptr[s], ms->n_pages);
    assert_int_equal(last[s], ms->tokens ? (ms->tokens - 1) % P + 1 : 0);
    for (uint32_t i = 0; i < ms->n_pages; i++) {
      ikv_pt_page_info pi;
      assert_int_equal(ikv_pt_page_get_info(m->pt, ms->pages[i], &pi), IKV_OK);
      assert_int_equal(idx[indptr[s] + i], pi.slot[IKV_TIER_GPU]);
      assert_int_equal(prec[indptr[s] + i], pi.precision);
    }
  }
  /* eviction candidates: resident in tier, never pinned, none twice */
  for (int t = 0; t < IKV_TIER_COUNT; t++) {
    ikv_page_id cand[MAX_PAGES];
    uint32_t n, expected = 0;
    assert_int_equal(ikv_pt_evict_candidates(m->pt, (ikv_tier)t, cand, MAX_PAGES, &n), IKV_OK);
    for (int p = 0; p < MAX_PAGES; p++)
      expected += m->pages[p].live && m->pages[p].resident[t] && !m->pages[p].pins;
    assert_int_equal(n, expected);
    uint8_t seen[MAX_PAGES] = {0};
    for (uint32_t i = 0; i < n; i++) {
      assert_true(m->pages[cand[i]].resident[t] && !m->pages[cand[i]].pins);
      assert_int_equal(seen[cand[i]]++, 0);
    }
  }
}

static void random_operations_match_the_model(void **state) {
  (void)state;
  static model m;
  memset(&m, 0, sizeof(m));
  const char *env = getenv("IKV_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 10) : 20261126;
  m.rng = seed | 1;
  printf("seed %llu (IKV_SEED=%llu replays)\n", (unsigned long long)seed, (unsigned long long)seed);
  ikv_pagetable_config cfg = {.geometry = {.layers = 2, .kv_heads = 2, .head_dim = 64, .page_size = P},
                              .max_sequences = MAX_SEQS};
  memcpy(cfg.capacity, capacity, sizeof(capacity));
  assert_int_equal(ikv_pt_create(&cfg, &m.pt), IKV_OK);
  static void (*const ops[])(model *) = {op_create, op_append, op_append, op_append, op_fork,
                                         op_free, op_truncate, op_set_precision, op_tier,
                                         op_tier, op_pin, op_span};
  const uint32_t n_ops = sizeof(ops) / sizeof(*ops);
  for (uint32_t step = 0; step < STEPS; step++) {
    ops[below(&m, n_ops)](&m);
    check(&m);
  }
  /* the run must have reached the interesting paths, not only the easy ones */
  printf("cow copies %llu, precision changes %llu\n", (unsigned long long)m.cow_copies,
         (unsigned long long)m.precision_changes);
  assert_true(m.cow_copies > 100);
  assert_true(m.precision_changes > 100);
  /* no leak at the end: freeing every sequence returns every slot */
  while (m.n_seqs) op_free(&m);
  check(&m);
  ikv_pt_stats st;
  assert_int_equal(ikv_pt_get_stats(m.pt, &st), IKV_OK);
  assert_int_equal(st.live_pages, 0);
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) assert_int_equal(st.pages_free[t][p], capacity[t][p]);
  ikv_pt_destroy(m.pt);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(random_operations_match_the_model)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
