/* Plans that keep the rows of the last build (scheduler tables, and the
 * router's span mode) against
 * plans built afresh: two runtimes fed the same operations, one planning
 * with a single plan object (which keeps what did not change), the other
 * with a new plan object every step (which builds everything and touches
 * its pages in full). Every plan, its partition, its statistics, every
 * error, and the pages' tiers, slots and precisions must agree step for
 * step, through appends, evictions to a small GPU tier, offloads,
 * conversions, truncations, changing tables and masks, per-head rows and
 * refused requests (a bad page index; a plan the GPU tier cannot hold); for
 * the router, through spans added, moved and removed, and budgets, memory
 * pressure and windows that change now and then. */
#include <stdlib.h>
#include <string.h>

#include "pagetable/pagetable.h"
#include "runtime/intentkv.h"
#include "tests/cmocka_all.h"
#include "tests/test_rng.h"

enum { L = 1, H = 2, HQ = 4, D = 16, P = 16, SEQS = 4, MAX_TOKENS = 640, MAX_PAGES = MAX_TOKENS / P, STEPS = 400 };

typedef struct twin {
  ikv_runtime *rt;
  ikv_plan *kept; /* the persistent plan (NULL in the fresh twin) */
  ikv_seq_id seqs[SEQS];
} twin;

static void twin_open(twin *t, int persistent, uint32_t max_plan_pages) {
  ikv_runtime_config c = {.geometry = {.layers = L, .kv_heads = H, .head_dim = D, .page_size = P},
                          .q_heads = HQ, .max_sequences = 8, .max_batch = SEQS, .max_plan_pages = max_plan_pages,
                          .backend = IKV_BACKEND_CPU};
  for (int p = 0; p < IKV_PRECISION_COUNT; p++)
    c.capacity[IKV_TIER_GPU][p] = 48, c.capacity[IKV_TIER_HOST][p] = 400; /* sequences outgrow the GPU tier */
  c.capacity[IKV_TIER_GPU][IKV_INT4] = 36; /* and downgrades to INT4 run out of room: they wait for a later plan */
  assert_int_equal(ikv_runtime_create(&c, &t->rt), IKV_OK);
  t->kept = NULL;
  if (persistent) assert_int_equal(ikv_plan_create(t->rt, &t->kept), IKV_OK);
  for (int s = 0; s < SEQS; s++) assert_int_equal(ikv_seq_create(t->rt, IKV_FP16, &t->seqs[s]), IKV_OK);
}

static void twin_close(twin *t) {
  ikv_plan_destroy(t->kept);
  ikv_runtime_destroy(t->rt);
}

/* Page i of sequence s: its id, and where it is. */
static ikv_pt_page_info page_of(const twin *t, int s, uint32_t i) {
  const ikv_pagetable *pt = ikv_runtime_pagetable(t->rt);
  ikv_page_id page;
  ikv_pt_page_info info;
  assert_int_equal(ikv_pt_seq_pages(pt, t->seqs[s], i, 1, &page), IKV_OK);
  assert_int_equal(ikv_pt_page_get_info(pt, page, &info), IKV_OK);
  return info;
}

static uint32_t tokens_of(const twin *t, int s) {
  ikv_pt_seq_info info;
  assert_int_equal(ikv_pt_seq_get_info(ikv_runtime_pagetable(t->rt), t->seqs[s], &info), IKV_OK);
  return info.tokens;
}

/* Both twins hold the same pages in the same places. */
static void same_pages(const twin *a, const twin *b) {
  for (int s = 0; s < SEQS; s++) {
    assert_int_equal(tokens_of(a, s), tokens_of(b, s));
    for (uint32_t i = 0; i < (tokens_of(a, s) + P - 1) / P; i++) {
      const ikv_pt_page_info x = page_of(a, s, i), y = page_of(b, s, i);
      assert_int_equal(x.precision, y.precision);
      for (int tier = 0; tier < IKV_TIER_COUNT; tier++) assert_int_equal(x.slot[tier], y.slot[tier]);
    }
  }
  ikv_runtime_stats x, y;
  assert_int_equal(ikv_runtime_get_stats(a->rt, &x), IKV_OK);
  assert_int_equal(ikv_runtime_get_stats(b->rt, &y), IKV_OK);
  assert_true(x.conversions == y.conversions && x.demand_fetches == y.demand_fetches && x.evictions == y.evictions &&
              x.pages_read == y.pages_read && x.pages_hit == y.pages_hit && x.bytes_read == y.bytes_read);
}

static void same_plans(const ikv_plan *a, const ikv_plan *b) {
  const ikv_decode_plan *x = ikv_plan_view(a), *y = ikv_plan_view(b);
  assert_int_equal(x->batch, y->batch);
  assert_int_equal(x->per_kv_head, y->per_kv_head);
  const uint32_t rows = x->batch * (x->per_kv_head ? H : 1), n = (uint32_t)x->indptr[rows];
  assert_memory_equal(x->indptr, y->indptr, sizeof(int32_t) * (rows + 1));
  assert_memory_equal(x->page_slot, y->page_slot, sizeof(int32_t) * n);
  assert_memory_equal(x->precision, y->precision, n);
  assert_memory_equal(x->page_index, y->page_index, sizeof(int32_t) * n);
  assert_memory_equal(x->first, y->first, sizeof(uint16_t) * n);
  assert_memory_equal(x->last, y->last, sizeof(uint16_t) * n);
  assert_memory_equal(x->seq_len, y->seq_len, sizeof(int32_t) * x->batch);
  uint32_t nx, ny;
  const ikv_work_item *wx = ikv_plan_work(a, &nx), *wy = ikv_plan_work(b, &ny);
  assert_int_equal(nx, ny);
  for (uint32_t i = 0; i < nx; i++) /* field by field: the struct has padding */
    assert_true(wx[i].row == wy[i].row && wx[i].precision == wy[i].precision && wx[i].begin == wy[i].begin &&
                wx[i].end == wy[i].end);
  assert_memory_equal(ikv_plan_work_entries(a), ikv_plan_work_entries(b), sizeof(int32_t) * n);
  ikv_plan_stats sx, sy;
  assert_int_equal(ikv_plan_get_stats(a, &sx), IKV_OK);
  assert_int_equal(ikv_plan_get_stats(b, &sy), IKV_OK);
  assert_int_equal(sy.entries_kept, 0); /* a new plan object keeps nothing */
  sy.entries_kept = sx.entries_kept;
  assert_memory_equal(&sx, &sy, sizeof(sx));
  uint32_t dx, dy;
  ikv_plan_decisions(a, &dx), ikv_plan_decisions(b, &dy);
  assert_int_equal(dx, dy);
}

/* The scheduler's tables this step, for the sequences of the batch in its
 * order: each row lists most pages of its
 * sequence, mostly the same ones step after step (a page's choice depends
 * on its index and a per-row salt that changes now and then), at the
 * page's stored precision or a lower one; masks either left to the runtime
 * or given (the valid tokens, sometimes fewer). */
typedef struct tables {
  int32_t indptr[SEQS * H + 1], index[SEQS * H * MAX_PAGES];
  uint8_t want[SEQS * H * MAX_PAGES];
  uint16_t first[SEQS * H * MAX_PAGES], last[SEQS * H * MAX_PAGES];
} tables;

static void make_tables(const twin *t, tables *tb, const uint32_t *salt, const int *order, int batch, int per_head,
                        int masks, int bad) {
  /* one step down in fidelity (fp16, bf16 > int8 > fp8 > int4) */
  static const uint8_t lower[IKV_PRECISION_COUNT] = {IKV_INT8, IKV_INT8, IKV_INT4, IKV_FP8_E4M3, IKV_INT4};
  const uint32_t rows_per = per_head ? H : 1;
  tb->indptr[0] = 0;
  for (int k = 0; k < batch; k++) {
    const int s = order[k];
    const uint32_t tokens = tokens_of(t, s), n_pages = (tokens + P - 1) / P;
    for (uint32_t h = 0; h < rows_per; h++) {
      const uint32_t r = (uint32_t)k * rows_per + h;
      int32_t e = tb->indptr[r];
      for (uint32_t i = 0; i < n_pages; i++) {
        const uint32_t hash = (i * 2654435761u) ^ (salt[s * H + h] * 40503u); /* the sequence's row, wherever it sits */
        if (i + 1 < n_pages && hash % 5 == 0) continue; /* the last page is always read */
        const ikv_precision stored = page_of(t, s, i).precision;
        tb->index[e] = (int32_t)i;
        tb->want[e] = i + 1 < n_pages && (hash >> 8) % 4 == 0 ? lower[stored] : (uint8_t)stored;
        const uint32_t valid = i + 1 == n_pages ? tokens - i * P : P;
        tb->first[e] = masks && (hash >> 12) % 3 == 0 ? (uint16_t)((hash >> 16) % valid) : 0;
        tb->last[e] = (uint16_t)((hash >> 20) % 2 || valid < 8 ? valid - 1 : 7); /* some masks stay put as pages fill */
        if (tb->first[e] > tb->last[e]) tb->first[e] = tb->last[e];
        e++;
      }
      tb->indptr[r + 1] = e;
    }
  }
  if (bad && tb->indptr[1] > 0) tb->index[tb->indptr[1] - 1] = (int32_t)MAX_PAGES; /* out of range */
}

typedef struct coverage {
  uint64_t built, kept_entries, selected, evictions, fetches, conversions, outgrown;
} coverage;

/* The router's request this step: parameters that hold for a while. */
static void router_params(test_rng *rng, ikv_router_params *rp) {
  static const float pressures[] = {0.0f, 0.6f, 0.8f, 0.95f};
  static const uint32_t windows[] = {0, 8, 40, 100};
  rp->memory_pressure = pressures[rng_below(rng, 4)];
  rp->recent_tokens = windows[rng_below(rng, 4)];
  rp->sink_tokens = rng_below(rng, 2) ? 4 : 0;
  rp->token_budget = rng_below(rng, 3) ? 0 : 40 + rng_below(rng, 300);
  rp->byte_budget = rng_below(rng, 4) ? 0 : 2000 + rng_below(rng, 30000);
  rp->default_score = (float)rng_uniform(rng);
}

/* A span over some of sequence s's tokens (both twins get the same one). */
static ikv_span_id add_span(twin *tw[2], int s, test_rng *rng, uint32_t tokens) {
  const uint32_t a = rng_below(rng, tokens), b = a + 1 + rng_below(rng, tokens - a);
  const ikv_span sp = {a, b, IKV_SPAN_DOCUMENT, (ikv_span_policy)rng_below(rng, IKV_POLICY_COUNT), (float)rng_uniform(rng),
                       rng_below(rng, 6) ? IKV_UNPINNED_PRECISION : IKV_INT8};
  ikv_span_id id[2];
  for (int x = 0; x < 2; x++) assert_int_equal(ikv_span_add(tw[x]->rt, tw[x]->seqs[s], &sp, &id[x]), IKV_OK);
  assert_int_equal(id[0], id[1]);
  return id[0];
}

/* One run of STEPS steps from a seed, planned from tables or (router) by
 * the router; what it went through added to *cov. */
static void run_twins(uint64_t seed, int router, coverage *cov) {
  twin a, b;
  /* the router's rows can outgrow the plan: refused while it routes */
  const uint32_t max_plan_pages = router ? 2 * MAX_PAGES : 4096;
  twin_open(&a, 1, max_plan_pages), twin_open(&b, 0, max_plan_pages);
  test_rng rng = {seed};
  static tables tb;
  uint32_t salt[SEQS * H] = {0};
  for (uint32_t r = 0; r < SEQS * H; r++) salt[r] = r + 1;
  int per_head = 0, masks = 0;
  ikv_router_params rp = {0};
  uint32_t spans[SEQS] = {0};
  int order[SEQS] = {0, 1, 2, 3}, batch = SEQS; /* the batch: sequences join, leave and change places */
  ikv_span_id last[SEQS];
  int has_last[SEQS] = {0}; /* the sequence's last span added, until removed */
  for (int step = 0; step < STEPS; step++) {
    /* new tokens (a prompt first, then a few a step), written to both twins */
    uint32_t n[SEQS], total = 0;
    for (int s = 0; s < SEQS; s++) {
      n[s] = step == 0 ? 60u + 37u * (uint32_t)s : (tokens_of(&a, s) + 8 < MAX_TOKENS ? rng_below(&rng, 3) : 0);
      total += n[s];
    }
    float *k = malloc(sizeof(float) * total * H * D), *v = malloc(sizeof(float) * total * H * D);
    rng_fill_gauss(&rng, k, (size_t)total * H * D, 1.0f), rng_fill_gauss(&rng, v, (size_t)total * H * D, 1.0f);
    int64_t *sl[2] = {malloc(sizeof(int64_t) * total), malloc(sizeof(int64_t) * total)};
    uint8_t *pr[2] = {malloc(total), malloc(total)};
    twin *tw[2] = {&a, &b};
    ikv_status appended[2];
    for (int x = 0; x < 2; x++) { /* refused alike where the GPU tier has no room or the last page was offloaded */
      appended[x] = ikv_append(tw[x]->rt, tw[x]->seqs, n, SEQS, sl[x], pr[x]);
      if (appended[x] == IKV_OK)
        assert_int_equal(ikv_write_kv(tw[x]->rt, 0, k, v, IKV_DTYPE_F32, sl[x], pr[x], total, NULL), IKV_OK);
    }
    assert_int_equal(appended[0], appended[1]);
    if (appended[0] == IKV_OK) assert_memory_equal(sl[0], sl[1], sizeof(int64_t) * total);
    else assert_true(appended[0] == IKV_E_CAPACITY || appended[0] == IKV_E_NOT_RESIDENT);
    free(k), free(v), free(sl[0]), free(sl[1]), free(pr[0]), free(pr[1]);
    /* now and then: an offload, a truncation, a row's choice changed, another row shape or mask form */
    const uint32_t event = rng_below(&rng, 100), s = rng_below(&rng, SEQS);
    if (event < 4 && tokens_of(&a, (int)s) > 2 * P)
      for (int x = 0; x < 2; x++) assert_int_equal(ikv_seq_offload(tw[x]->rt, tw[x]->seqs[s], 1, 1), IKV_OK);
    if (event >= 4 && event < 7 && tokens_of(&a, (int)s) > 3 * P) {
      const uint32_t keep = tokens_of(&a, (int)s) - 20;
      for (int x = 0; x < 2; x++) assert_int_equal(ikv_seq_truncate(tw[x]->rt, tw[x]->seqs[s], keep), IKV_OK);
    }
    if (event >= 7 && event < 17) salt[rng_below(&rng, SEQS * H)] += 7;
    if (step % 97 == 96) per_head = !per_head;
    if (step % 61 == 60) masks = !masks;
    const int bad = !router && event >= 17 && event < 20;
    if (router && (step == 0 || (event >= 20 && event < 24))) router_params(&rng, &rp);
    if (router && tokens_of(&a, (int)s) && (step == 0 || (event >= 24 && event < 30 && spans[s] < 12))) {
      last[s] = add_span(tw, (int)s, &rng, tokens_of(&a, (int)s)); /* spans come, move and go */
      has_last[s] = 1, spans[s]++;
    }
    if (router && event >= 30 && event < 32 && has_last[s]) {
      const ikv_span sp = {0, 1 + rng_below(&rng, tokens_of(&a, (int)s)), IKV_SPAN_SYSTEM, IKV_POLICY_ALWAYS, 1.0f,
                           IKV_UNPINNED_PRECISION};
      const ikv_status ua = ikv_span_update(a.rt, a.seqs[s], last[s], &sp), ub = ikv_span_update(b.rt, b.seqs[s], last[s], &sp);
      assert_int_equal(ua, ub);
      assert_true(ua == IKV_OK || ua == IKV_E_UNKNOWN_SPAN); /* a truncation may have cut the span away */
      has_last[s] = ua == IKV_OK;
    }
    if (router && event == 32 && has_last[s]) {
      const ikv_status ra = ikv_span_remove(a.rt, a.seqs[s], last[s]), rb = ikv_span_remove(b.rt, b.seqs[s], last[s]);
      assert_int_equal(ra, rb);
      assert_true(ra == IKV_OK || ra == IKV_E_UNKNOWN_SPAN);
      has_last[s] = 0;
    }
    if (event >= 33 && event < 37) { /* all in order, one left out, reversed, or the first moved last */
      const uint32_t shape = rng_below(&rng, 4), out = rng_below(&rng, SEQS);
      batch = 0;
      for (int k = 0; k < SEQS; k++)
        if (shape != 1 || k != (int)out) order[batch++] = shape == 2 ? SEQS - 1 - k : shape == 3 ? (k + 1) % SEQS : k;
    }
    ikv_seq_id seqs_a[SEQS], seqs_b[SEQS];
    for (int k = 0; k < batch; k++) seqs_a[k] = a.seqs[order[k]], seqs_b[k] = b.seqs[order[k]];
    /* the same request for both (tables made from twin a; asserted equal below) */
    make_tables(&a, &tb, salt, order, batch, per_head, masks, bad);
    ikv_plan_request req = {.seqs = seqs_a, .batch = (uint32_t)batch, .mode = IKV_PLAN_TABLES,
                            .tables = {.per_kv_head = (uint32_t)per_head, .indptr = tb.indptr, .page_index = tb.index,
                                       .precision = tb.want, .first = masks ? tb.first : NULL, .last = masks ? tb.last : NULL}};
    if (router) req = (ikv_plan_request){.seqs = seqs_a, .batch = (uint32_t)batch, .mode = IKV_PLAN_ROUTER, .router = rp};
    ikv_plan_request req_b = req;
    req_b.seqs = seqs_b;
    ikv_plan *fresh;
    assert_int_equal(ikv_plan_create(b.rt, &fresh), IKV_OK);
    const ikv_status sa = ikv_plan_build(a.rt, a.kept, &req), sb = ikv_plan_build(b.rt, fresh, &req_b);
    assert_int_equal(sa, sb);
    if (bad) assert_int_equal(sa, IKV_E_RANGE);
    if (sa != IKV_OK) assert_string_equal(ikv_runtime_errmsg(a.rt), ikv_runtime_errmsg(b.rt));
    cov->outgrown += sa != IKV_OK && strstr(ikv_runtime_errmsg(a.rt), "max_plan_pages") != NULL;
    if (sa == IKV_OK) {
      same_plans(a.kept, fresh);
      ikv_plan_stats st;
      assert_int_equal(ikv_plan_get_stats(a.kept, &st), IKV_OK);
      cov->built++, cov->kept_entries += st.entries_kept, cov->selected += st.pages_selected;
      assert_int_equal(ikv_step_end(a.rt, a.kept), IKV_OK);
      assert_int_equal(ikv_step_end(b.rt, fresh), IKV_OK);
    }
    ikv_plan_destroy(fresh);
    same_pages(&a, &b);
  }
  ikv_runtime_stats st;
  assert_int_equal(ikv_runtime_get_stats(a.rt, &st), IKV_OK);
  cov->evictions += st.evictions, cov->fetches += st.demand_fetches, cov->conversions += st.conversions;
  twin_close(&a), twin_close(&b);
}

static void step_tables(void **state) {
  (void)state;
  coverage cov = {0};
  static const uint64_t seeds[] = {0x9e3779b97f4a7c15ull, 23, 53, 83};
  for (int i = 0; i < 4; i++) run_twins(seeds[i], 0, &cov);
  /* the runs went where they were meant to: pages left the GPU tier and came back, pages converted,
   * most builds were made (the rest refused alike: bad entries, more fp16 pages than the tier holds)
   * and kept many entries (48% over these runs), so that path was the one checked */
  assert_true(cov.evictions > 0 && cov.fetches > 0 && cov.conversions > 0);
  assert_true(cov.built > 4 * STEPS * 2 / 3);
  assert_true(cov.kept_entries > cov.selected / 3);
}

/* A downgrade the last build could not make (its target pool was full) is
 * tried again by the next build, even where that build keeps the row. */
static void deferred_downgrades_are_retried(void **state) {
  (void)state;
  ikv_runtime_config c = {.geometry = {.layers = L, .kv_heads = H, .head_dim = D, .page_size = P},
                          .q_heads = HQ, .max_sequences = 4, .max_batch = 2, .max_plan_pages = 64,
                          .backend = IKV_BACKEND_CPU};
  c.capacity[IKV_TIER_GPU][IKV_FP16] = 8, c.capacity[IKV_TIER_GPU][IKV_INT4] = 1;
  ikv_runtime *rt;
  ikv_plan *plan;
  assert_int_equal(ikv_runtime_create(&c, &rt), IKV_OK);
  assert_int_equal(ikv_plan_create(rt, &plan), IKV_OK);
  ikv_seq_id seq, filler;
  assert_int_equal(ikv_seq_create(rt, IKV_FP16, &seq), IKV_OK);
  assert_int_equal(ikv_seq_create(rt, IKV_FP16, &filler), IKV_OK);
  test_rng rng = {7};
  float k[3 * P * H * D], v[3 * P * H * D];
  rng_fill_gauss(&rng, k, sizeof(k) / sizeof(float), 1.0f), rng_fill_gauss(&rng, v, sizeof(v) / sizeof(float), 1.0f);
  int64_t slots[3 * P];
  uint8_t precs[3 * P];
  uint32_t n = 3 * P, one = P;
  assert_int_equal(ikv_append(rt, &seq, &n, 1, slots, precs), IKV_OK);
  assert_int_equal(ikv_write_kv(rt, 0, k, v, IKV_DTYPE_F32, slots, precs, n, NULL), IKV_OK);
  assert_int_equal(ikv_append(rt, &filler, &one, 1, slots, precs), IKV_OK);
  assert_int_equal(ikv_write_kv(rt, 0, k, v, IKV_DTYPE_F32, slots, precs, one, NULL), IKV_OK);
  /* the filler's page takes the one INT4 slot */
  int32_t indptr[2] = {0, 1}, index[3] = {0, 1, 2};
  uint8_t want[3] = {IKV_INT4, IKV_FP16, IKV_FP16};
  ikv_plan_request req = {.seqs = &filler, .batch = 1, .mode = IKV_PLAN_TABLES,
                          .tables = {.indptr = indptr, .page_index = index, .precision = want}};
  assert_int_equal(ikv_plan_build(rt, plan, &req), IKV_OK);
  assert_int_equal(ikv_step_end(rt, plan), IKV_OK);
  /* the sequence's page 0 asks for INT4 too: no room, read as FP16 */
  ikv_plan *kept;
  assert_int_equal(ikv_plan_create(rt, &kept), IKV_OK);
  indptr[1] = 3;
  req.seqs = &seq;
  ikv_plan_stats st;
  assert_int_equal(ikv_plan_build(rt, kept, &req), IKV_OK);
  assert_int_equal(ikv_plan_get_stats(kept, &st), IKV_OK);
  assert_int_equal(st.conversions, 0);
  assert_int_equal(ikv_plan_view(kept)->precision[0], IKV_FP16);
  assert_int_equal(ikv_step_end(rt, kept), IKV_OK);
  /* the slot frees up; the same tables again: rows kept, page 0 converted */
  ikv_plan_destroy(plan);
  assert_int_equal(ikv_seq_free(rt, filler), IKV_OK);
  assert_int_equal(ikv_plan_build(rt, kept, &req), IKV_OK);
  assert_int_equal(ikv_plan_get_stats(kept, &st), IKV_OK);
  assert_int_equal(st.conversions, 1);
  assert_int_equal(ikv_plan_view(kept)->precision[0], IKV_INT4);
  assert_int_equal(st.entries_kept, 0); /* the row from its waiting entry on: all of it */
  assert_int_equal(ikv_step_end(rt, kept), IKV_OK);
  /* and once settled, a third build keeps all three entries */
  assert_int_equal(ikv_plan_build(rt, kept, &req), IKV_OK);
  assert_int_equal(ikv_plan_get_stats(kept, &st), IKV_OK);
  assert_int_equal(st.conversions, 0);
  assert_int_equal(st.entries_kept, 2); /* page 2 is the sequence's last: its mask is looked at again */
  assert_int_equal(ikv_step_end(rt, kept), IKV_OK);
  ikv_plan_destroy(kept);
  ikv_runtime_destroy(rt);
}

/* The router in span mode, the same way. */
static void step_router(void **state) {
  (void)state;
  coverage cov = {0};
  static const uint64_t seeds[] = {0x2545f4914f6cdd1dull, 29, 59, 89};
  for (int i = 0; i < 4; i++) run_twins(seeds[i], 1, &cov);
  assert_true(cov.evictions > 0 && cov.fetches > 0 && cov.conversions > 0 && cov.outgrown > 0);
  assert_true(cov.built > 4 * STEPS * 2 / 3);
  assert_true(cov.kept_entries > cov.selected / 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(step_tables), cmocka_unit_test(step_router),
                                     cmocka_unit_test(deferred_downgrades_are_retried)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
