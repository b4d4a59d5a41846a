/* Unit tests of the block-table manager: each operation, its error paths, and
 * that a failed call changes nothing. */
#include <stdlib.h>
#include <string.h>

#include "kernels/page_format.h"
#include "pagetable/pagetable.h"
#include "tests/cmocka_all.h"

#define P 16u

static const ikv_geometry geometry = {.layers = 2, .kv_heads = 2, .head_dim = 64, .page_size = P};

static ikv_pagetable *make_table(uint32_t gpu_fp16, uint32_t gpu_int8, uint32_t host_fp16,
                                 uint32_t host_int8, uint32_t max_seqs) {
  ikv_pagetable_config cfg = {.geometry = geometry, .max_sequences = max_seqs};
  cfg.capacity[IKV_TIER_GPU][IKV_FP16] = gpu_fp16;
  cfg.capacity[IKV_TIER_GPU][IKV_INT8] = gpu_int8;
  cfg.capacity[IKV_TIER_HOST][IKV_FP16] = host_fp16;
  cfg.capacity[IKV_TIER_HOST][IKV_INT8] = host_int8;
  ikv_pagetable *pt = NULL;
  assert_int_equal(ikv_pt_create(&cfg, &pt), IKV_OK);
  return pt;
}

/* Everything observable about a table's global state, to prove "no change". */
typedef struct snapshot {
  ikv_pt_stats stats;
  ikv_page_id lru[IKV_TIER_COUNT][64];
  uint32_t n_lru[IKV_TIER_COUNT];
} snapshot;

static snapshot take(const ikv_pagetable *pt) {
  snapshot s;
  memset(&s, 0, sizeof(s));
  assert_int_equal(ikv_pt_get_stats(pt, &s.stats), IKV_OK);
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    assert_int_equal(ikv_pt_evict_candidates(pt, (ikv_tier)t, s.lru[t], 64, &s.n_lru[t]), IKV_OK);
  return s;
}

static void assert_unchanged(const ikv_pagetable *pt, const snapshot *before) {
  snapshot now = take(pt);
  assert_memory_equal(&now, before, sizeof(now));
}

static ikv_seq_id new_seq(ikv_pagetable *pt, uint32_t tokens) {
  ikv_seq_id id;
  assert_int_equal(ikv_pt_seq_create(pt, IKV_FP16, &id), IKV_OK);
  if (tokens) {
    int64_t *map = malloc(sizeof(int64_t) * tokens);
    ikv_pt_copy cow;
    assert_int_equal(ikv_pt_seq_append(pt, id, tokens, map, NULL, &cow), IKV_OK);
    assert_int_equal(cow.bytes, 0);
    free(map);
  }
  return id;
}

static ikv_page_id page_at(const ikv_pagetable *pt, ikv_seq_id seq, uint32_t index) {
  ikv_page_id page;
  assert_int_equal(ikv_pt_seq_pages(pt, seq, index, 1, &page), IKV_OK);
  return page;
}

static void create_validates_config(void **state) {
  (void)state;
  ikv_pagetable *pt = (ikv_pagetable *)0x1;
  ikv_pagetable_config cfg = {.geometry = geometry, .max_sequences = 4};
  cfg.capacity[IKV_TIER_GPU][IKV_FP16] = 8;
  assert_int_equal(ikv_pt_create(NULL, &pt), IKV_E_NULL);
  assert_int_equal(ikv_pt_create(&cfg, NULL), IKV_E_NULL);
  ikv_pagetable_config bad = cfg;
  bad.geometry.page_size = 24;
  assert_int_equal(ikv_pt_create(&bad, &pt), IKV_E_INVALID);
  bad = cfg;
  bad.max_sequences = 0;
  assert_int_equal(ikv_pt_create(&bad, &pt), IKV_E_INVALID);
  bad = cfg;
  bad.capacity[IKV_TIER_GPU][IKV_FP16] = 0;
  assert_int_equal(ikv_pt_create(&bad, &pt), IKV_E_INVALID);
  assert_ptr_equal(pt, (ikv_pagetable *)0x1); /* untouched on error */
  assert_int_equal(ikv_pt_create(&cfg, &pt), IKV_OK);
  assert_int_equal(ikv_pt_geometry(pt)->page_size, P);
  ikv_pt_destroy(pt);
  ikv_pt_destroy(NULL);
}

static void seq_create_errors(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 2);
  ikv_seq_id a, b, c = 77;
  assert_int_equal(ikv_pt_seq_create(NULL, IKV_FP16, &a), IKV_E_NULL);
  assert_int_equal(ikv_pt_seq_create(pt, IKV_FP16, NULL), IKV_E_NULL);
  assert_int_equal(ikv_pt_seq_create(pt, (ikv_precision)9, &a), IKV_E_PRECISION);
  assert_int_equal(ikv_pt_seq_create(pt, IKV_SKIP, &a), IKV_E_PRECISION);
  /* no GPU INT8 pool provisioned: such a sequence could never hold a token */
  assert_int_equal(ikv_pt_seq_create(pt, IKV_INT8, &a), IKV_E_PRECISION);
  assert_int_equal(ikv_pt_seq_create(pt, IKV_FP16, &a), IKV_OK);
  assert_int_equal(ikv_pt_seq_create(pt, IKV_FP16, &b), IKV_OK);
  assert_true(a != 0 && b != 0 && a != b);
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_seq_create(pt, IKV_FP16, &c), IKV_E_CAPACITY);
  assert_int_equal(c, 77);
  assert_unchanged(pt, &before);
  ikv_pt_destroy(pt);
}

static void append_gives_vllm_slot_mapping(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 4);
  ikv_seq_id s = new_seq(pt, 0);
  int64_t map[40];
  uint8_t prec[40];
  ikv_pt_copy cow;
  assert_int_equal(ikv_pt_seq_append(pt, s, 20, map, prec, &cow), IKV_OK);
  assert_int_equal(cow.bytes, 0);
  assert_int_equal(ikv_pt_seq_append(pt, s, 15, map + 20, prec + 20, &cow), IKV_OK);
  ikv_pt_seq_info info;
  assert_int_equal(ikv_pt_seq_get_info(pt, s, &info), IKV_OK);
  assert_int_equal(info.tokens, 35);
  assert_int_equal(info.pages, 3);
  for (uint32_t t = 0; t < 35; t++) {
    ikv_pt_page_info pi;
    assert_int_equal(ikv_pt_page_get_info(pt, page_at(pt, s, t / P), &pi), IKV_OK);
    assert_int_equal(map[t], (int64_t)pi.slot[IKV_TIER_GPU] * P + t % P);
    assert_int_equal(prec[t], IKV_FP16);
  }
  /* zero tokens is a no-op */
  assert_int_equal(ikv_pt_seq_append(pt, s, 0, NULL, NULL, NULL), IKV_OK);
  ikv_pt_destroy(pt);
}

static void append_errors_change_nothing(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(3, 0, 3, 0, 4);
  ikv_seq_id s = new_seq(pt, 20);
  int64_t map[64];
  ikv_pt_copy cow;
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_seq_append(NULL, s, 1, map, NULL, &cow), IKV_E_NULL);
  assert_int_equal(ikv_pt_seq_append(pt, s, 1, NULL, NULL, &cow), IKV_E_NULL);
  assert_int_equal(ikv_pt_seq_append(pt, s + 1, 1, map, NULL, &cow), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_pt_seq_append(pt, 0, 1, map, NULL, &cow), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_pt_seq_append(pt, s, UINT32_MAX, map, NULL, &cow), IKV_E_RANGE);
  /* 20 + 29 tokens need 4 pages; the pool has 3 */
  assert_int_equal(ikv_pt_seq_append(pt, s, 29, map, NULL, &cow), IKV_E_CAPACITY);
  assert_unchanged(pt, &before);
  ikv_pt_seq_info info;
  assert_int_equal(ikv_pt_seq_get_info(pt, s, &info), IKV_OK);
  assert_int_equal(info.tokens, 20);
  /* exactly filling the pool works */
  assert_int_equal(ikv_pt_seq_append(pt, s, 28, map, NULL, &cow), IKV_OK);
  ikv_pt_destroy(pt);
}

static void append_needs_resident_last_page(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(4, 0, 4, 0, 4);
  ikv_seq_id s = new_seq(pt, 20);
  ikv_page_id last = page_at(pt, s, 1);
  ikv_pt_copy copy;
  assert_int_equal(ikv_pt_page_make_resident(pt, last, IKV_TIER_HOST, &copy), IKV_OK);
  assert_int_equal(ikv_pt_page_release(pt, last, IKV_TIER_GPU), IKV_OK);
  int64_t map[4];
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_seq_append(pt, s, 1, map, NULL, &copy), IKV_E_NOT_RESIDENT);
  assert_unchanged(pt, &before);
  /* a full last page is never written again: appending starts a new page */
  assert_int_equal(ikv_pt_seq_truncate(pt, s, 16), IKV_OK);
  ikv_page_id first = page_at(pt, s, 0);
  assert_int_equal(ikv_pt_page_make_resident(pt, first, IKV_TIER_HOST, &copy), IKV_OK);
  assert_int_equal(ikv_pt_page_release(pt, first, IKV_TIER_GPU), IKV_OK);
  assert_int_equal(ikv_pt_seq_append(pt, s, 1, map, NULL, &copy), IKV_OK);
  ikv_pt_destroy(pt);
}

static void fork_shares_and_copies_on_write(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 4);
  ikv_seq_id parent = new_seq(pt, 20), child;
  assert_int_equal(ikv_pt_seq_fork(pt, parent, &child), IKV_OK);
  ikv_pt_stats st;
  assert_int_equal(ikv_pt_get_stats(pt, &st), IKV_OK);
  assert_int_equal(st.shared_pages, 2);
  assert_int_equal(st.live_pages, 2);
  assert_int_equal(st.pages_used[IKV_TIER_GPU][IKV_FP16], 2);
  ikv_page_id shared_last = page_at(pt, parent, 1);
  assert_int_equal(page_at(pt, child, 1), shared_last);

  /* without a cow out-argument the call refuses and changes nothing */
  int64_t map[8];
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_seq_append(pt, child, 1, map, NULL, NULL), IKV_E_NULL);
  assert_unchanged(pt, &before);

  ikv_pt_copy cow;
  assert_int_equal(ikv_pt_seq_append(pt, child, 1, map, NULL, &cow), IKV_OK);
  ikv_pt_page_info src, dst;
  assert_int_equal(ikv_pt_page_get_info(pt, shared_last, &src), IKV_OK);
  assert_int_equal(ikv_pt_page_get_info(pt, cow.dst_page, &dst), IKV_OK);
  assert_int_equal(cow.src_page, shared_last);
  assert_int_equal(cow.src_slot, src.slot[IKV_TIER_GPU]);
  assert_int_equal(cow.dst_slot, dst.slot[IKV_TIER_GPU]);
  assert_int_equal(cow.bytes, ikv_page_bytes(&geometry, IKV_FP16));
  assert_int_equal(cow.tier, IKV_TIER_GPU);
  assert_int_equal(map[0], (int64_t)dst.slot[IKV_TIER_GPU] * P + 4);
  assert_int_equal(page_at(pt, child, 1), cow.dst_page);
  assert_int_equal(page_at(pt, parent, 1), shared_last);
  assert_int_equal(page_at(pt, child, 0), page_at(pt, parent, 0));
  assert_int_equal(src.refcount, 1);
  assert_int_equal(ikv_pt_get_stats(pt, &st), IKV_OK);
  assert_int_equal(st.shared_pages, 1);
  assert_int_equal(st.cow_copies, 1);
  /* the parent now owns its last page alone: no copy */
  assert_int_equal(ikv_pt_seq_append(pt, parent, 1, map, NULL, &cow), IKV_OK);
  assert_int_equal(cow.bytes, 0);
  assert_int_equal(map[0], (int64_t)src.slot[IKV_TIER_GPU] * P + 4);
  ikv_pt_destroy(pt);
}

static void fork_errors_and_capacity_of_cow(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(2, 0, 2, 0, 2);
  ikv_seq_id parent = new_seq(pt, 20), child, other;
  assert_int_equal(ikv_pt_seq_fork(NULL, parent, &child), IKV_E_NULL);
  assert_int_equal(ikv_pt_seq_fork(pt, parent, NULL), IKV_E_NULL);
  assert_int_equal(ikv_pt_seq_fork(pt, parent + 2, &child), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_pt_seq_fork(pt, parent, &child), IKV_OK);
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_seq_fork(pt, parent, &other), IKV_E_CAPACITY); /* 2 sequences max */
  /* the GPU pool is full: the copy-on-write has nowhere to go */
  int64_t map[2];
  ikv_pt_copy cow;
  assert_int_equal(ikv_pt_seq_append(pt, child, 1, map, NULL, &cow), IKV_E_CAPACITY);
  assert_unchanged(pt, &before);
  ikv_pt_destroy(pt);
}

static void free_releases_and_never_reuses_ids(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 1);
  ikv_seq_id a = new_seq(pt, 40);
  assert_int_equal(ikv_pt_seq_free(pt, a), IKV_OK);
  assert_int_equal(ikv_pt_seq_free(pt, a), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_pt_seq_free(NULL, a), IKV_E_NULL);
  ikv_pt_stats st;
  assert_int_equal(ikv_pt_get_stats(pt, &st), IKV_OK);
  assert_int_equal(st.live_pages, 0);
  assert_int_equal(st.sequences, 0);
  assert_int_equal(st.pages_free[IKV_TIER_GPU][IKV_FP16], 8);
  ikv_seq_id b = new_seq(pt, 0);
  assert_true(b != a); /* same slot, new generation */
  ikv_pt_seq_info info;
  assert_int_equal(ikv_pt_seq_get_info(pt, a, &info), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_pt_seq_get_info(pt, b, &info), IKV_OK);
  assert_int_equal(info.tokens, 0);
  ikv_pt_destroy(pt);
}

static void truncate_rolls_back(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 2);
  ikv_seq_id s = new_seq(pt, 40);
  ikv_span sp = {.start = 10, .end = 40, .kind = IKV_SPAN_TOOL_OUTPUT, .policy = IKV_POLICY_ATTEND,
                 .score = 0.5f, .pinned_precision = IKV_UNPINNED_PRECISION};
  ikv_span late = sp;
  late.start = 36;
  ikv_span_id id, late_id;
  assert_int_equal(ikv_pt_span_add(pt, s, &sp, &id), IKV_OK);
  assert_int_equal(ikv_pt_span_add(pt, s, &late, &late_id), IKV_OK);
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_seq_truncate(pt, s, 41), IKV_E_RANGE);
  assert_int_equal(ikv_pt_seq_truncate(pt, s + 1, 1), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_pt_seq_truncate(NULL, s, 1), IKV_E_NULL);
  assert_unchanged(pt, &before);
  assert_int_equal(ikv_pt_seq_truncate(pt, s, 17), IKV_OK);
  ikv_pt_seq_info info;
  assert_int_equal(ikv_pt_seq_get_info(pt, s, &info), IKV_OK);
  assert_int_equal(info.tokens, 17);
  assert_int_equal(info.pages, 2);
  assert_int_equal(info.spans, 1);
  ikv_span got;
  assert_int_equal(ikv_pt_span_get(pt, s, id, &got), IKV_OK);
  assert_int_equal(got.end, 17);
  assert_int_equal(ikv_pt_span_get(pt, s, late_id, &got), IKV_E_UNKNOWN_SPAN);
  ikv_pt_stats st;
  assert_int_equal(ikv_pt_get_stats(pt, &st), IKV_OK);
  assert_int_equal(st.pages_used[IKV_TIER_GPU][IKV_FP16], 2);
  assert_int_equal(ikv_pt_seq_truncate(pt, s, 0), IKV_OK);
  assert_int_equal(ikv_pt_get_stats(pt, &st), IKV_OK);
  assert_int_equal(st.live_pages, 0);
  ikv_pt_destroy(pt);
}

static void precision_change_is_atomic(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(4, 2, 4, 1, 2);
  ikv_seq_id s = new_seq(pt, 48);
  ikv_page_id a = page_at(pt, s, 0), b = page_at(pt, s, 1);
  ikv_pt_move mv;
  ikv_pt_page_info before_info, after;
  assert_int_equal(ikv_pt_page_get_info(pt, a, &before_info), IKV_OK);
  assert_int_equal(ikv_pt_page_set_precision(pt, a, IKV_INT8, &mv), IKV_OK);
  assert_int_equal(ikv_pt_page_get_info(pt, a, &after), IKV_OK);
  assert_int_equal(after.precision, IKV_INT8);
  assert_int_equal(mv.from, IKV_FP16);
  assert_int_equal(mv.to, IKV_INT8);
  assert_int_equal(mv.old_slot[IKV_TIER_GPU], before_info.slot[IKV_TIER_GPU]);
  assert_int_equal(mv.new_slot[IKV_TIER_GPU], after.slot[IKV_TIER_GPU]);
  assert_int_equal(mv.new_slot[IKV_TIER_HOST], IKV_NO_SLOT);
  ikv_pt_stats st;
  assert_int_equal(ikv_pt_get_stats(pt, &st), IKV_OK);
  assert_int_equal(st.pages_used[IKV_TIER_GPU][IKV_FP16], 2);
  assert_int_equal(st.pages_used[IKV_TIER_GPU][IKV_INT8], 1);
  assert_int_equal(st.bytes_used[IKV_TIER_GPU][IKV_INT8], ikv_page_bytes(&geometry, IKV_INT8));
  assert_int_equal(st.precision_changes, 1);

  /* b resident in both tiers; the host INT8 pool (1) is taken by another page */
  ikv_pt_copy copy;
  assert_int_equal(ikv_pt_page_make_resident(pt, a, IKV_TIER_HOST, &copy), IKV_OK);
  assert_int_equal(ikv_pt_page_make_resident(pt, b, IKV_TIER_HOST, &copy), IKV_OK);
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_page_set_precision(pt, b, IKV_INT8, &mv), IKV_E_CAPACITY);
  assert_int_equal(ikv_pt_page_set_precision(pt, b, (ikv_precision)7, &mv), IKV_E_PRECISION);
  assert_int_equal(ikv_pt_page_set_precision(pt, b, IKV_SKIP, &mv), IKV_E_PRECISION);
  assert_int_equal(ikv_pt_page_set_precision(pt, 999, IKV_INT8, &mv), IKV_E_UNKNOWN_PAGE);
  assert_int_equal(ikv_pt_page_set_precision(pt, b, IKV_INT8, NULL), IKV_E_NULL);
  assert_unchanged(pt, &before);
  assert_int_equal(ikv_pt_page_get_info(pt, b, &after), IKV_OK);
  assert_int_equal(after.precision, IKV_FP16);
  /* same precision: nothing moves */
  assert_int_equal(ikv_pt_page_set_precision(pt, b, IKV_FP16, &mv), IKV_OK);
  assert_int_equal(mv.old_slot[IKV_TIER_GPU], mv.new_slot[IKV_TIER_GPU]);
  assert_unchanged(pt, &before);
  ikv_pt_destroy(pt);
}

static void residency_moves_and_pins(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(4, 0, 1, 0, 2);
  ikv_seq_id s = new_seq(pt, 48);
  ikv_page_id a = page_at(pt, s, 0), b = page_at(pt, s, 1);
  ikv_pt_copy copy;
  assert_int_equal(ikv_pt_page_release(pt, a, IKV_TIER_GPU), IKV_E_LAST_COPY);
  assert_int_equal(ikv_pt_page_release(pt, a, IKV_TIER_HOST), IKV_E_NOT_RESIDENT);
  assert_int_equal(ikv_pt_page_release(pt, a, (ikv_tier)5), IKV_E_INVALID);
  assert_int_equal(ikv_pt_page_make_resident(pt, a, IKV_TIER_HOST, &copy), IKV_OK);
  ikv_pt_page_info info;
  assert_int_equal(ikv_pt_page_get_info(pt, a, &info), IKV_OK);
  assert_int_equal(copy.tier, IKV_TIER_HOST);
  assert_int_equal(copy.src_slot, info.slot[IKV_TIER_GPU]);
  assert_int_equal(copy.dst_slot, info.slot[IKV_TIER_HOST]);
  assert_int_equal(copy.bytes, ikv_page_bytes(&geometry, IKV_FP16));
  assert_int_equal(ikv_pt_page_make_resident(pt, a, IKV_TIER_HOST, &copy), IKV_OK);
  assert_int_equal(copy.bytes, 0); /* already there */
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_page_make_resident(pt, b, IKV_TIER_HOST, &copy), IKV_E_CAPACITY);
  assert_int_equal(ikv_pt_page_make_resident(pt, b, IKV_TIER_HOST, NULL), IKV_E_NULL);
  assert_int_equal(ikv_pt_page_make_resident(pt, 4242, IKV_TIER_HOST, &copy), IKV_E_UNKNOWN_PAGE);
  assert_unchanged(pt, &before);

  assert_int_equal(ikv_pt_page_pin(pt, a), IKV_OK);
  assert_int_equal(ikv_pt_page_release(pt, a, IKV_TIER_GPU), IKV_E_PINNED);
  assert_int_equal(ikv_pt_page_unpin(pt, a), IKV_OK);
  assert_int_equal(ikv_pt_page_unpin(pt, a), IKV_E_INVALID);
  assert_int_equal(ikv_pt_page_pin(pt, 4242), IKV_E_UNKNOWN_PAGE);
  assert_int_equal(ikv_pt_page_release(pt, a, IKV_TIER_GPU), IKV_OK);
  assert_int_equal(ikv_pt_page_get_info(pt, a, &info), IKV_OK);
  assert_int_equal(info.slot[IKV_TIER_GPU], IKV_NO_SLOT);
  /* back to the GPU: copy from host */
  assert_int_equal(ikv_pt_page_make_resident(pt, a, IKV_TIER_GPU, &copy), IKV_OK);
  assert_int_equal(copy.src_slot, info.slot[IKV_TIER_HOST]);
  assert_true(copy.bytes > 0);
  ikv_pt_destroy(pt);
}

static void eviction_order_is_lru_without_pinned(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 2);
  ikv_seq_id s = new_seq(pt, 64); /* pages 0..3 allocated in order */
  ikv_page_id p[4];
  assert_int_equal(ikv_pt_seq_pages(pt, s, 0, 4, p), IKV_OK);
  ikv_page_id out[8];
  uint32_t n;
  assert_int_equal(ikv_pt_evict_candidates(pt, IKV_TIER_GPU, out, 8, &n), IKV_OK);
  assert_int_equal(n, 4);
  for (int i = 0; i < 4; i++) assert_int_equal(out[i], p[i]);
  assert_int_equal(ikv_pt_page_touch(pt, p[0]), IKV_OK);
  assert_int_equal(ikv_pt_page_pin(pt, p[2]), IKV_OK);
  assert_int_equal(ikv_pt_evict_candidates(pt, IKV_TIER_GPU, out, 8, &n), IKV_OK);
  assert_int_equal(n, 3);
  assert_int_equal(out[0], p[1]);
  assert_int_equal(out[1], p[3]);
  assert_int_equal(out[2], p[0]);
  assert_int_equal(ikv_pt_evict_candidates(pt, IKV_TIER_GPU, out, 1, &n), IKV_OK);
  assert_int_equal(n, 1);
  assert_int_equal(ikv_pt_evict_candidates(pt, IKV_TIER_HOST, out, 8, &n), IKV_OK);
  assert_int_equal(n, 0);
  assert_int_equal(ikv_pt_evict_candidates(pt, IKV_TIER_GPU, NULL, 8, &n), IKV_E_NULL);
  assert_int_equal(ikv_pt_evict_candidates(pt, (ikv_tier)2, out, 8, &n), IKV_E_INVALID);
  assert_int_equal(ikv_pt_page_touch(pt, 4242), IKV_E_UNKNOWN_PAGE);
  /* batch touch: in order, all or none */
  ikv_page_id batch[3] = {p[3], p[1], 4242};
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_pages_touch(pt, batch, 3), IKV_E_UNKNOWN_PAGE);
  assert_unchanged(pt, &before);
  assert_int_equal(ikv_pt_pages_touch(pt, batch, 2), IKV_OK);
  assert_int_equal(ikv_pt_evict_candidates(pt, IKV_TIER_GPU, out, 8, &n), IKV_OK);
  assert_int_equal(n, 3);
  assert_int_equal(out[0], p[0]);
  assert_int_equal(out[1], p[3]);
  assert_int_equal(out[2], p[1]);
  assert_int_equal(ikv_pt_pages_touch(pt, NULL, 1), IKV_E_NULL);
  ikv_pt_destroy(pt);
}

static void spans_cover_pages_with_token_masks(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 2);
  ikv_seq_id s = new_seq(pt, 70);
  ikv_span sp = {.start = 5, .end = 37, .kind = IKV_SPAN_DOCUMENT, .policy = IKV_POLICY_ATTEND,
                 .score = 0.25f, .pinned_precision = IKV_UNPINNED_PRECISION};
  ikv_span_id id;
  assert_int_equal(ikv_pt_span_add(pt, s, &sp, &id), IKV_OK);
  ikv_page_extent ext[8];
  uint32_t n;
  assert_int_equal(ikv_pt_span_pages(pt, s, id, ext, 8, &n), IKV_OK);
  assert_int_equal(n, 3);
  assert_int_equal(ext[0].page_index, 0);
  assert_int_equal(ext[0].first, 5);
  assert_int_equal(ext[0].last, 15);
  assert_int_equal(ext[1].first, 0);
  assert_int_equal(ext[1].last, 15);
  assert_int_equal(ext[2].page_index, 2);
  assert_int_equal(ext[2].first, 0);
  assert_int_equal(ext[2].last, 4);
  assert_int_equal(ext[2].page, page_at(pt, s, 2));
  /* a one-token span inside one page */
  ikv_span one = sp;
  one.start = 40;
  one.end = 41;
  assert_int_equal(ikv_pt_span_update(pt, s, id, &one), IKV_OK);
  assert_int_equal(ikv_pt_span_pages(pt, s, id, ext, 8, &n), IKV_OK);
  assert_int_equal(n, 1);
  assert_int_equal(ext[0].first, 8);
  assert_int_equal(ext[0].last, 8);
  /* too small a buffer says how many are needed */
  assert_int_equal(ikv_pt_span_update(pt, s, id, &sp), IKV_OK);
  assert_int_equal(ikv_pt_span_pages(pt, s, id, ext, 2, &n), IKV_E_CAPACITY);
  assert_int_equal(n, 3);
  ikv_pt_destroy(pt);
}

static void span_errors_change_nothing(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 2);
  ikv_seq_id s = new_seq(pt, 32);
  ikv_span good = {.start = 0, .end = 4, .kind = IKV_SPAN_SYSTEM, .policy = IKV_POLICY_ALWAYS,
                   .score = 1.0f, .pinned_precision = IKV_FP16};
  ikv_span_id id, other;
  assert_int_equal(ikv_pt_span_add(pt, s, &good, &id), IKV_OK);
  ikv_span bad[6];
  for (int i = 0; i < 6; i++) bad[i] = good;
  bad[0].end = 33;                            /* past the sequence */
  bad[1].start = 4;                           /* empty */
  bad[2].kind = IKV_SPAN_KIND_COUNT;
  bad[3].policy = (ikv_span_policy)9;
  bad[4].score = 0.0f / 0.0f;                 /* NaN */
  bad[5].pinned_precision = IKV_SKIP;
  ikv_status want[6] = {IKV_E_RANGE, IKV_E_RANGE, IKV_E_INVALID, IKV_E_INVALID, IKV_E_INVALID,
                        IKV_E_PRECISION};
  for (int i = 0; i < 6; i++) {
    assert_int_equal(ikv_pt_span_add(pt, s, &bad[i], &other), want[i]);
    assert_int_equal(ikv_pt_span_update(pt, s, id, &bad[i]), want[i]);
  }
  ikv_span got;
  assert_int_equal(ikv_pt_span_get(pt, s, id, &got), IKV_OK);
  assert_memory_equal(&got, &good, sizeof(got));
  assert_int_equal(ikv_pt_span_add(pt, s + 1, &good, &other), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_pt_span_add(pt, s, NULL, &other), IKV_E_NULL);
  assert_int_equal(ikv_pt_span_update(pt, s, id + 5, &good), IKV_E_UNKNOWN_SPAN);
  assert_int_equal(ikv_pt_span_remove(pt, s, id + 5), IKV_E_UNKNOWN_SPAN);
  assert_int_equal(ikv_pt_span_get(pt, s, id + 5, &got), IKV_E_UNKNOWN_SPAN);
  ikv_span_id ids[4];
  uint32_t n;
  assert_int_equal(ikv_pt_span_add(pt, s, &good, &other), IKV_OK);
  assert_int_equal(ikv_pt_span_list(pt, s, ids, NULL, 1, &n), IKV_E_CAPACITY);
  assert_int_equal(n, 2);
  assert_int_equal(ikv_pt_span_remove(pt, s, id), IKV_OK);
  assert_int_equal(ikv_pt_span_remove(pt, s, id), IKV_E_UNKNOWN_SPAN);
  ikv_span listed[4];
  assert_int_equal(ikv_pt_span_list(pt, s, ids, listed, 4, &n), IKV_OK);
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], other);
  assert_int_equal(listed[0].start, good.start);
  assert_int_equal(listed[0].end, good.end);
  assert_int_equal(listed[0].policy, good.policy);
  /* a forked child inherits the spans */
  ikv_seq_id child;
  assert_int_equal(ikv_pt_seq_fork(pt, s, &child), IKV_OK);
  assert_int_equal(ikv_pt_span_get(pt, child, other, &got), IKV_OK);
  assert_int_equal(got.policy, IKV_POLICY_ALWAYS);
  ikv_pt_destroy(pt);
}

static void exports_match_block_tables(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(16, 4, 8, 0, 4);
  ikv_seq_id seqs[3] = {new_seq(pt, 35), new_seq(pt, 0), new_seq(pt, 16)};
  ikv_pt_move mv;
  assert_int_equal(ikv_pt_page_set_precision(pt, page_at(pt, seqs[0], 1), IKV_INT8, &mv), IKV_OK);
  int32_t bt[3 * 4], lens[3];
  uint8_t prec[3 * 4];
  assert_int_equal(ikv_pt_export_block_table(pt, seqs, 3, IKV_TIER_GPU, bt, 4, lens, prec), IKV_OK);
  assert_int_equal(lens[0], 35);
  assert_int_equal(lens[1], 0);
  assert_int_equal(lens[2], 16);
  int32_t indptr[4], idx[8], last[3];
  uint8_t cprec[8];
  assert_int_equal(ikv_pt_export_csr(pt, seqs, 3, IKV_TIER_GPU, indptr, idx, 8, last, cprec), IKV_OK);
  assert_int_equal(indptr[0], 0);
  assert_int_equal(indptr[1], 3);
  assert_int_equal(indptr[2], 3);
  assert_int_equal(indptr[3], 4);
  assert_int_equal(last[0], 3);
  assert_int_equal(last[1], 0);
  assert_int_equal(last[2], 16);
  for (int b = 0; b < 3; b++) {
    ikv_pt_seq_info info;
    assert_int_equal(ikv_pt_seq_get_info(pt, seqs[b], &info), IKV_OK);
    for (uint32_t i = 0; i < 4; i++) {
      if (i >= info.pages) {
        assert_int_equal(bt[b * 4 + i], -1);
        assert_int_equal(prec[b * 4 + i], IKV_SKIP);
        continue;
      }
      ikv_pt_page_info pi;
      assert_int_equal(ikv_pt_page_get_info(pt, page_at(pt, seqs[b], i), &pi), IKV_OK);
      assert_int_equal(bt[b * 4 + i], pi.slot[IKV_TIER_GPU]);
      assert_int_equal(prec[b * 4 + i], pi.precision);
      assert_int_equal(idx[indptr[b] + i], pi.slot[IKV_TIER_GPU]);
      assert_int_equal(cprec[indptr[b] + i], pi.precision);
    }
  }
  assert_int_equal(prec[1], IKV_INT8);
  /* a later precision change shows in the next export (the cache follows) */
  ikv_page_id moved = page_at(pt, seqs[2], 0);
  assert_int_equal(ikv_pt_page_set_precision(pt, moved, IKV_INT8, &mv), IKV_OK);
  assert_int_equal(ikv_pt_export_csr(pt, seqs, 3, IKV_TIER_GPU, indptr, idx, 8, last, cprec), IKV_OK);
  assert_int_equal(idx[3], mv.new_slot[IKV_TIER_GPU]);
  assert_int_equal(cprec[3], IKV_INT8);
  /* and so does an eviction: the GPU export refuses, the host export works */
  ikv_pt_copy copy;
  assert_int_equal(ikv_pt_page_make_resident(pt, moved, IKV_TIER_HOST, &copy), IKV_E_CAPACITY);
  assert_int_equal(ikv_pt_page_set_precision(pt, moved, IKV_FP16, &mv), IKV_OK);
  assert_int_equal(ikv_pt_page_make_resident(pt, moved, IKV_TIER_HOST, &copy), IKV_OK);
  assert_int_equal(ikv_pt_page_release(pt, moved, IKV_TIER_GPU), IKV_OK);
  assert_int_equal(ikv_pt_export_csr(pt, &seqs[2], 1, IKV_TIER_GPU, indptr, idx, 8, last, NULL), IKV_E_NOT_RESIDENT);
  assert_int_equal(ikv_pt_export_csr(pt, &seqs[2], 1, IKV_TIER_HOST, indptr, idx, 8, last, NULL), IKV_OK);
  assert_int_equal(idx[0], copy.dst_slot);
  ikv_pt_destroy(pt);
}

/* Shape errors and GPU residency are checked before anything is written;
 * host residency in the writing pass (documented). */
static void export_errors_are_reported(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(16, 0, 8, 0, 4);
  ikv_seq_id seqs[2] = {new_seq(pt, 35), new_seq(pt, 20)};
  int32_t bt[8], lens[2], indptr[3], idx[8], last[2];
  memset(bt, 0x5a, sizeof(bt));
  memset(idx, 0x5a, sizeof(idx));
  memset(indptr, 0x5a, sizeof(indptr));
  int32_t poison;
  memset(&poison, 0x5a, sizeof(poison));
  assert_int_equal(ikv_pt_export_block_table(pt, seqs, 2, IKV_TIER_GPU, bt, 2, lens, NULL), IKV_E_CAPACITY);
  assert_int_equal(ikv_pt_export_csr(pt, seqs, 2, IKV_TIER_GPU, indptr, idx, 4, last, NULL), IKV_E_CAPACITY);
  ikv_seq_id gone[2] = {seqs[0], seqs[1] + 2};
  assert_int_equal(ikv_pt_export_csr(pt, gone, 2, IKV_TIER_GPU, indptr, idx, 8, last, NULL), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_pt_export_block_table(pt, gone, 2, IKV_TIER_GPU, bt, 4, lens, NULL), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_pt_export_csr(pt, seqs, 2, (ikv_tier)3, indptr, idx, 8, last, NULL), IKV_E_INVALID);
  assert_int_equal(ikv_pt_export_csr(pt, seqs, 2, IKV_TIER_GPU, NULL, idx, 8, last, NULL), IKV_E_NULL);
  assert_int_equal(ikv_pt_export_block_table(pt, NULL, 2, IKV_TIER_GPU, bt, 4, lens, NULL), IKV_E_NULL);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(bt[i], poison);
    assert_int_equal(idx[i], poison);
  }
  for (int i = 0; i < 3; i++) assert_int_equal(indptr[i], poison);
  assert_int_equal(ikv_pt_export_csr(pt, seqs, 2, IKV_TIER_HOST, indptr, idx, 8, last, NULL), IKV_E_NOT_RESIDENT);
  assert_int_equal(ikv_pt_export_block_table(pt, seqs, 2, IKV_TIER_HOST, bt, 4, lens, NULL), IKV_E_NOT_RESIDENT);
  ikv_pt_destroy(pt);
}

static void stats_count_bytes_per_pool(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 2);
  new_seq(pt, 33);
  ikv_pt_stats st;
  assert_int_equal(ikv_pt_get_stats(NULL, &st), IKV_E_NULL);
  assert_int_equal(ikv_pt_get_stats(pt, &st), IKV_OK);
  assert_int_equal(st.pages_used[IKV_TIER_GPU][IKV_FP16], 3);
  assert_int_equal(st.pages_free[IKV_TIER_GPU][IKV_FP16], 5);
  assert_int_equal(st.bytes_used[IKV_TIER_GPU][IKV_FP16], 3 * ikv_page_bytes(&geometry, IKV_FP16));
  assert_int_equal(st.pages_used[IKV_TIER_HOST][IKV_FP16], 0);
  assert_int_equal(st.sequences, 1);
  ikv_pt_destroy(pt);
}

static void slot_owners_and_views(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 4, 8, 0, 2);
  ikv_seq_id s = new_seq(pt, 40);
  ikv_pt_seq_view view;
  assert_int_equal(ikv_pt_seq_get_view(pt, s, &view), IKV_OK);
  assert_int_equal(view.tokens, 40);
  assert_int_equal(view.n_pages, 3);
  for (uint32_t i = 0; i < 3; i++) {
    ikv_page_id owner;
    assert_int_equal(ikv_pt_slot_owner(pt, IKV_TIER_GPU, IKV_FP16, view.gpu_slots[i], &owner), IKV_OK);
    assert_int_equal(owner, view.pages[i]);
    assert_int_equal(view.precisions[i], IKV_FP16);
  }
  ikv_page_id owner = 77;
  ikv_pt_move mv;
  assert_int_equal(ikv_pt_page_set_precision(pt, view.pages[1], IKV_INT8, &mv), IKV_OK);
  assert_int_equal(ikv_pt_slot_owner(pt, IKV_TIER_GPU, IKV_FP16, mv.old_slot[IKV_TIER_GPU], &owner), IKV_E_NOT_RESIDENT);
  assert_int_equal(ikv_pt_slot_owner(pt, IKV_TIER_GPU, IKV_INT8, mv.new_slot[IKV_TIER_GPU], &owner), IKV_OK);
  assert_int_equal(owner, view.pages[1]);
  assert_int_equal(ikv_pt_seq_get_view(pt, s, &view), IKV_OK); /* refreshed after the change */
  assert_int_equal(view.precisions[1], IKV_INT8);
  assert_int_equal(view.gpu_slots[1], mv.new_slot[IKV_TIER_GPU]);
  assert_int_equal(ikv_pt_slot_owner(pt, IKV_TIER_GPU, IKV_FP16, 8, &owner), IKV_E_RANGE);
  assert_int_equal(ikv_pt_slot_owner(pt, IKV_TIER_GPU, IKV_SKIP, 0, &owner), IKV_E_PRECISION);
  assert_int_equal(ikv_pt_slot_owner(pt, IKV_TIER_GPU, IKV_FP16, 0, NULL), IKV_E_NULL);
  assert_int_equal(ikv_pt_seq_get_view(pt, s + 1, &view), IKV_E_UNKNOWN_SEQ);
  ikv_pt_destroy(pt);
}

/* Deferred touches order pages as touching them at reservation would; a
 * use since wins, freed pages are passed over, unreserved values refused. */
static void stamps_order_as_touches_would(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 0, 8, 0, 2);
  ikv_seq_id s = new_seq(pt, 64);
  ikv_page_id p[4], out[8];
  uint32_t n;
  assert_int_equal(ikv_pt_seq_pages(pt, s, 0, 4, p), IKV_OK);
  uint64_t base;
  assert_int_equal(ikv_pt_clock_reserve(pt, 2, &base), IKV_OK); /* a plan reading p[2], p[0], in that order */
  assert_int_equal(ikv_pt_page_touch(pt, p[1]), IKV_OK);        /* used after the plan was built */
  ikv_page_id read[2] = {p[2], p[0]};
  assert_int_equal(ikv_pt_pages_stamp(pt, read, 2, base), IKV_OK);
  assert_int_equal(ikv_pt_evict_candidates(pt, IKV_TIER_GPU, out, 8, &n), IKV_OK);
  assert_int_equal(n, 4);
  assert_int_equal(out[0], p[3]), assert_int_equal(out[1], p[2]), assert_int_equal(out[2], p[0]), assert_int_equal(out[3], p[1]);
  /* stamps no newer than a page's recency change nothing: p[1]'s later use stays */
  ikv_page_id again[2] = {p[1], p[0]};
  assert_int_equal(ikv_pt_pages_stamp(pt, again, 2, base), IKV_OK);
  assert_int_equal(ikv_pt_evict_candidates(pt, IKV_TIER_GPU, out, 8, &n), IKV_OK);
  assert_int_equal(out[0], p[3]), assert_int_equal(out[1], p[2]), assert_int_equal(out[2], p[0]), assert_int_equal(out[3], p[1]);
  ikv_page_id gone[2] = {p[0], 4242};
  assert_int_equal(ikv_pt_pages_stamp(pt, gone, 2, base), IKV_OK); /* an unknown page: passed over */
  snapshot before = take(pt);
  assert_int_equal(ikv_pt_pages_stamp(pt, read, 2, base + 10), IKV_E_INVALID); /* never reserved */
  assert_int_equal(ikv_pt_pages_stamp(pt, NULL, 1, base), IKV_E_NULL);
  assert_int_equal(ikv_pt_clock_reserve(pt, 1, NULL), IKV_E_NULL);
  assert_int_equal(ikv_pt_clock_reserve(NULL, 1, &base), IKV_E_NULL);
  assert_unchanged(pt, &before);
  ikv_pt_destroy(pt);
}

/* A view's version moves when a page the sequence had moves, changes
 * precision or is replaced, and not when pages are appended. */
static void view_versions_track_changed_pages(void **state) {
  (void)state;
  ikv_pagetable *pt = make_table(8, 4, 8, 0, 3);
  ikv_seq_id s = new_seq(pt, 20), t = new_seq(pt, 20);
  ikv_pt_seq_view v, w;
  assert_int_equal(ikv_pt_seq_get_view(pt, s, &v), IKV_OK);
  assert_int_equal(ikv_pt_seq_get_view(pt, t, &w), IKV_OK);
  const uint32_t v0 = v.version, w0 = w.version;
  int64_t slots[16];
  assert_int_equal(ikv_pt_seq_append(pt, s, 16, slots, NULL, NULL), IKV_OK); /* a page more */
  assert_int_equal(ikv_pt_seq_get_view(pt, s, &v), IKV_OK);
  assert_int_equal(v.version, v0);
  ikv_pt_move mv;
  assert_int_equal(ikv_pt_page_set_precision(pt, v.pages[0], IKV_INT8, &mv), IKV_OK);
  assert_int_equal(ikv_pt_seq_get_view(pt, s, &v), IKV_OK);
  assert_int_equal(ikv_pt_seq_get_view(pt, t, &w), IKV_OK);
  assert_true(v.version != v0);
  assert_int_equal(w.version, w0); /* none of t's pages changed */
  const uint32_t v1 = v.version;
  assert_int_equal(ikv_pt_seq_truncate(pt, s, 18), IKV_OK);
  assert_int_equal(ikv_pt_seq_get_view(pt, s, &v), IKV_OK);
  assert_true(v.version != v1);
  ikv_seq_id child;
  assert_int_equal(ikv_pt_seq_fork(pt, t, &child), IKV_OK);
  ikv_pt_copy cow;
  assert_int_equal(ikv_pt_seq_append(pt, t, 1, slots, NULL, &cow), IKV_OK); /* its last page is copied */
  assert_true(cow.dst_page != cow.src_page);
  assert_int_equal(ikv_pt_seq_get_view(pt, t, &w), IKV_OK);
  assert_true(w.version != w0);
  ikv_pt_destroy(pt);
}

/* Scale: 100k live sequences at once, and a sequence of more than 1M tokens. */
static void scales_to_many_sequences_and_long_ones(void **state) {
  (void)state;
  const uint32_t n_seqs = 100000, long_tokens = (1u << 20) + 77;
  ikv_pagetable *pt = make_table(n_seqs + long_tokens / P + 1, 0, 1, 0, n_seqs + 1);
  ikv_seq_id *ids = malloc(sizeof(ikv_seq_id) * n_seqs);
  int64_t map[8];
  ikv_pt_copy cow;
  for (uint32_t i = 0; i < n_seqs; i++) {
    assert_int_equal(ikv_pt_seq_create(pt, IKV_FP16, &ids[i]), IKV_OK);
    assert_int_equal(ikv_pt_seq_append(pt, ids[i], 3, map, NULL, &cow), IKV_OK);
  }
  ikv_seq_id longest = new_seq(pt, 0);
  int64_t *chunk = malloc(sizeof(int64_t) * 4096);
  for (uint32_t done = 0; done < long_tokens;) {
    uint32_t n = long_tokens - done < 4096 ? long_tokens - done : 4096;
    assert_int_equal(ikv_pt_seq_append(pt, longest, n, chunk, NULL, &cow), IKV_OK);
    done += n;
  }
  int32_t *bt = malloc(sizeof(int32_t) * (long_tokens / P + 1));
  int32_t len;
  assert_int_equal(ikv_pt_export_block_table(pt, &longest, 1, IKV_TIER_GPU, bt, long_tokens / P + 1, &len, NULL), IKV_OK);
  assert_int_equal(len, long_tokens);
  ikv_pt_stats st;
  assert_int_equal(ikv_pt_get_stats(pt, &st), IKV_OK);
  assert_int_equal(st.sequences, n_seqs + 1);
  assert_int_equal(st.live_pages, n_seqs + long_tokens / P + 1);
  for (uint32_t i = 0; i < n_seqs; i++) assert_int_equal(ikv_pt_seq_free(pt, ids[i]), IKV_OK);
  assert_int_equal(ikv_pt_seq_free(pt, longest), IKV_OK);
  assert_int_equal(ikv_pt_get_stats(pt, &st), IKV_OK);
  assert_int_equal(st.live_pages, 0);
  free(bt);
  free(chunk);
  free(ids);
  ikv_pt_destroy(pt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(create_validates_config),
      cmocka_unit_test(seq_create_errors),
      cmocka_unit_test(append_gives_vllm_slot_mapping),
      cmocka_unit_test(append_errors_change_nothing),
      cmocka_unit_test(append_needs_resident_last_page),
      cmocka_unit_test(fork_shares_and_copies_on_write),
      cmocka_unit_test(fork_errors_and_capacity_of_cow),
      cmocka_unit_test(free_releases_and_never_reuses_ids),
      cmocka_unit_test(truncate_rolls_back),
      cmocka_unit_test(precision_change_is_atomic),
      cmocka_unit_test(residency_moves_and_pins),
      cmocka_unit_test(eviction_order_is_lru_without_pinned),
      cmocka_unit_test(spans_cover_pages_with_token_masks),
      cmocka_unit_test(span_errors_change_nothing),
      cmocka_unit_test(exports_match_block_tables),
      cmocka_unit_test(export_errors_are_reported),
      cmocka_unit_test(stats_count_bytes_per_pool),
      cmocka_unit_test(slot_owners_and_views),
      cmocka_unit_test(stamps_order_as_touches_would),
      cmocka_unit_test(view_versions_track_changed_pages),
      cmocka_unit_test(scales_to_many_sequences_and_long_ones),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
