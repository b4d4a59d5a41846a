/* ikv demo: the block-table manager on an agentic sequence mix. An agent's
 * context (system prompt, retrieved document, user turn) is forked into three
 * tool-calling sub-agents that share its pages; they append, one rolls back
 * speculative tokens, the shared document is downgraded to INT4 under memory
 * pressure, cold pages are evicted to the host tier and fetched back, and the
 * batch is exported as a FlashInfer CSR page table. */
#include <stdio.h>
#include <stdlib.h>

#include "kernels/page_format.h"
#include "pagetable/pagetable.h"
#include "tools/ikv_cli.h"

static const char usage[] =
    "usage: ikv demo\n\n"
    "Walks the page table through an agentic sequence mix (Llama-3.1-8B geometry:\n"
    "32 layers, 8 KV heads, head_dim 128, 16-token pages) and prints each step:\n"
    "prefix sharing, appends with copy-on-write, speculative rollback, a precision\n"
    "change, an eviction to the host tier, and the exported page table. CPU only.\n";

#define MIB (1024.0 * 1024.0)

typedef struct demo {
  ikv_pagetable *pt;
  const ikv_geometry *g;
} demo;

static void print_pools(const demo *d) {
  ikv_pt_stats st;
  IKV_CLI_CHECK(ikv_pt_get_stats(d->pt, &st));
  printf("    pool        used/free    bytes used\n");
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      uint32_t cap = st.pages_used[t][p] + st.pages_free[t][p];
      if (!cap) continue;
      printf("    %-4s %-8s %4u/%-4u   %9.1f MiB\n", ikv_tier_name(t), ikv_precision_name(p),
             st.pages_used[t][p], st.pages_free[t][p], st.bytes_used[t][p] / MIB);
    }
  printf("    live pages %u, shared %u, sequences %u, copy-on-write copies %llu, precision changes %llu\n",
         st.live_pages, st.shared_pages, st.sequences, (unsigned long long)st.cow_copies,
         (unsigned long long)st.precision_changes);
}

static uint32_t append(const demo *d, ikv_seq_id seq, uint32_t n, const char *what) {
  int64_t *slots = malloc(sizeof(int64_t) * n);
  ikv_pt_copy cow;
  IKV_CLI_CHECK(ikv_pt_seq_append(d->pt, seq, n, slots, NULL, &cow));
  ikv_pt_seq_info info;
  IKV_CLI_CHECK(ikv_pt_seq_get_info(d->pt, seq, &info));
  printf("    +%-4u tokens %-14s -> %5u tokens, %3u pages; slot of first token %lld, of last %lld", n, what, info.tokens,
         info.pages, (long long)slots[0], (long long)slots[n - 1]);
  if (cow.bytes)
    printf("\n          copy-on-write: shared page %u (slot %d) copied to page %u (slot %d), %.1f MiB",
           cow.src_page, cow.src_slot, cow.dst_page, cow.dst_slot, cow.bytes / MIB);
  printf("\n");
  free(slots);
  return info.tokens - n;
}

static ikv_span_id add_span(const demo *d, ikv_seq_id seq, uint32_t start, uint32_t end,
                            ikv_span_kind kind, ikv_span_policy policy, float score) {
  ikv_span sp = {.start = start, .end = end, .kind = kind, .policy = policy, .score = score,
                 .pinned_precision = IKV_UNPINNED_PRECISION};
  ikv_span_id id;
  IKV_CLI_CHECK(ikv_pt_span_add(d->pt, seq, &sp, &id));
  ikv_page_extent ext[256];
  uint32_t n;
  IKV_CLI_CHECK(ikv_pt_span_pages(d->pt, seq, id, ext, 256, &n));
  printf("    span %-11s %-6s tokens [%5u, %5u) -> pages %u..%u, first page from token %u, last page to token %u\n",
         ikv_span_kind_name(kind), ikv_span_policy_name(policy), start, end, ext[0].page_index,
         ext[n - 1].page_index, ext[0].first, ext[n - 1].last);
  return id;
}

int ikv_cmd_demo(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  ikv_pagetable_config cfg = {
      .geometry = {.layers = 32, .kv_heads = 8, .head_dim = 128, .page_size = 16},
      .max_sequences = 64};
  cfg.capacity[IKV_TIER_GPU][IKV_FP16] = 192;
  cfg.capacity[IKV_TIER_GPU][IKV_INT4] = 64;
  cfg.capacity[IKV_TIER_HOST][IKV_FP16] = 256;
  cfg.capacity[IKV_TIER_HOST][IKV_INT4] = 256;
  demo d;
  IKV_CLI_CHECK(ikv_pt_create(&cfg, &d.pt));
  d.g = ikv_pt_geometry(d.pt);
  printf("intentkv demo: the block-table manager on an agentic sequence mix\n");
  printf("geometry: %u layers, %u KV heads, head_dim %u, %u tokens per page\n", d.g->layers,
         d.g->kv_heads, d.g->head_dim, d.g->page_size);
  printf("page bytes (all layers, K+V): fp16 %.2f MiB, int4 %.2f MiB\n\n",
         ikv_page_bytes(d.g, IKV_FP16) / MIB, ikv_page_bytes(d.g, IKV_INT4) / MIB);

  printf("1. an agent's context: system prompt, retrieved document, user turn\n");
  ikv_seq_id agent;
  IKV_CLI_CHECK(ikv_pt_seq_create(d.pt, IKV_FP16, &agent));
  uint32_t sys = append(&d, agent, 512, "system prompt");
  uint32_t doc = append(&d, agent, 768, "document");
  uint32_t user = append(&d, agent, 100, "user turn");
  add_span(&d, agent, sys, doc, IKV_SPAN_SYSTEM, IKV_POLICY_ALWAYS, 1.0f);
  ikv_span_id doc_span = add_span(&d, agent, doc, user, IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.3f);
  add_span(&d, agent, user, user + 100, IKV_SPAN_USER, IKV_POLICY_RECENT, 0.9f);
  /* The system prompt must never leave the GPU. */
  for (uint32_t i = 0; i < 512 / 16; i++) {
    ikv_page_id page;
    IKV_CLI_CHECK(ikv_pt_seq_pages(d.pt, agent, i, 1, &page));
    IKV_CLI_CHECK(ikv_pt_page_pin(d.pt, page));
  }
  printf("    system prompt pages pinned on the GPU\n");
  print_pools(&d);

  printf("\n2. three tool-calling sub-agents fork the context (prefix sharing, no bytes copied)\n");
  ikv_seq_id sub[3];
  for (int i = 0; i < 3; i++) IKV_CLI_CHECK(ikv_pt_seq_fork(d.pt, agent, &sub[i]));
  print_pools(&d);

  printf("\n3. each sub-agent appends its tool call and the tool's output\n");
  const uint32_t output[3] = {200, 350, 90};
  for (int i = 0; i < 3; i++) {
    printf("  sub-agent %d\n", i);
    uint32_t start = append(&d, sub[i], 24, "tool call");
    append(&d, sub[i], output[i], "tool output");
    add_span(&d, sub[i], start + 24, start + 24 + output[i], IKV_SPAN_TOOL_OUTPUT, IKV_POLICY_ATTEND, 0.6f);
  }
  print_pools(&d);

  printf("\n4. speculative decoding on sub-agent 0: 5 draft tokens, 3 accepted\n");
  uint32_t before = append(&d, sub[0], 5, "draft");
  IKV_CLI_CHECK(ikv_pt_seq_truncate(d.pt, sub[0], before + 3));
  printf("    rolled back to %u tokens\n", before + 3);

  printf("\n5. memory pressure: the shared document drops from fp16 to int4\n");
  ikv_page_extent ext[64];
  uint32_t n_doc;
  IKV_CLI_CHECK(ikv_pt_span_pages(d.pt, agent, doc_span, ext, 64, &n_doc));
  size_t freed = 0;
  for (uint32_t i = 0; i < n_doc; i++) {
    ikv_pt_move mv;
    IKV_CLI_CHECK(ikv_pt_page_set_precision(d.pt, ext[i].page, IKV_INT4, &mv));
    freed += ikv_page_bytes(d.g, mv.from) - ikv_page_bytes(d.g, mv.to);
  }
  printf("    %u pages converted once for all four sequences sharing them; %.1f MiB of GPU memory freed\n",
         n_doc, freed / MIB);
  print_pools(&d);

  printf("\n6. the agent retires; the sub-agents' recent pages are touched; 6 cold pages go to the host\n");
  IKV_CLI_CHECK(ikv_pt_seq_free(d.pt, agent));
  for (int i = 0; i < 3; i++) {
    ikv_pt_seq_info info;
    IKV_CLI_CHECK(ikv_pt_seq_get_info(d.pt, sub[i], &info));
    for (uint32_t p = 1380 / 16; p < info.pages; p++) {
      ikv_page_id page;
      IKV_CLI_CHECK(ikv_pt_seq_pages(d.pt, sub[i], p, 1, &page));
      IKV_CLI_CHECK(ikv_pt_page_touch(d.pt, page));
    }
  }
  ikv_page_id victims[6];
  uint32_t n_victims;
  IKV_CLI_CHECK(ikv_pt_evict_candidates(d.pt, IKV_TIER_GPU, victims, 6, &n_victims));
  size_t moved = 0;
  printf("    least recently used, pinned system prompt skipped:");
  for (uint32_t i = 0; i < n_victims; i++) {
    ikv_pt_copy copy;
    IKV_CLI_CHECK(ikv_pt_page_make_resident(d.pt, victims[i], IKV_TIER_HOST, &copy));
    IKV_CLI_CHECK(ikv_pt_page_release(d.pt, victims[i], IKV_TIER_GPU));
    moved += copy.bytes;
    printf(" %u(%s)", victims[i], ikv_precision_name(copy.precision));
  }
  printf("\n    %.1f MiB moved GPU -> host (an int4 page moves %.0f%% of an fp16 page's bytes)\n",
         moved / MIB, 100.0 * ikv_page_bytes(d.g, IKV_INT4) / ikv_page_bytes(d.g, IKV_FP16));
  print_pools(&d);

  printf("\n7. export the sub-agents as a FlashInfer CSR page table (GPU slots)\n");
  static int32_t indptr[4], indices[1024], last_len[3];
  static uint8_t prec[1024];
  ikv_status st = ikv_pt_export_csr(d.pt, sub, 3, IKV_TIER_GPU, indptr, indices, 1024, last_len, prec);
  printf("    first try: %s\n", ikv_status_str(st));
  uint32_t fetched = 0;
  for (uint32_t i = 0; i < n_victims; i++) {
    ikv_pt_copy copy;
    IKV_CLI_CHECK(ikv_pt_page_make_resident(d.pt, victims[i], IKV_TIER_GPU, &copy));
    fetched += copy.bytes != 0;
  }
  printf("    %u pages fetched back from the host tier, then:\n", fetched);
  IKV_CLI_CHECK(ikv_pt_export_csr(d.pt, sub, 3, IKV_TIER_GPU, indptr, indices, 1024, last_len, prec));
  for (int i = 0; i < 3; i++) {
    int32_t a = indptr[i], b = indptr[i + 1];
    printf("    seq %d: indptr [%d, %d), last_page_len %d, slots %d %d %d ... %d, precisions %s ... %s\n", i,
           a, b, last_len[i], indices[a], indices[a + 1], indices[a + 2], indices[b - 1],
           ikv_precision_name(prec[a]), ikv_precision_name(prec[b - 1]));
  }
  for (int i = 0; i < 3; i++) IKV_CLI_CHECK(ikv_pt_seq_free(d.pt, sub[i]));
  ikv_pt_stats end;
  IKV_CLI_CHECK(ikv_pt_get_stats(d.pt, &end));
  printf("\nall sequences freed: %u live pages left\n", end.live_pages);
  ikv_pt_destroy(d.pt);
  return 0;
}
