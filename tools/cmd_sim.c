/* ikv sim: replays a trace against a sweep of GPU cache sizes and every
 * predictor (prefetch/sim.h); a table, JSON, CSV and an SVG plot. */
#include <string.h>
#include <unistd.h>

#include "prefetch/sim.h"
#include "tools/ikv_cli.h"

static const char usage[] =
    "usage: ikv sim --trace FILE [--json] [--csv FILE] [--svg FILE]\n"
    "               [--fractions F,F,...] [--link-gbs X] [--step-us X]\n\n"
    "Replays a page-selection trace (ikv trace gen) against GPU caches holding\n"
    "a fraction of the trace's KV bytes (default 0.05,0.1,0.2,0.3,0.5) under each\n"
    "predictor: lru_no_prefetch (the floor), history, policy, score_margin (pages\n"
    "scored just under the cut), hints (the trace's scheduler hints), and belady\n"
    "(knows the future: the reference). A link of --link-gbs GB/s (default 50) turns\n"
    "bytes fetched on demand into stall time; prefetches move during each step's\n"
    "compute (--step-us, default 10000). Prints hit rate, bytes host->GPU and\n"
    "stall per step; --json prints one object whose `results` lists a row per\n"
    "predictor and fraction; --csv and --svg write the rows and a plot of hit\n"
    "rate against cache size.\n";

#define MAX_FRACTIONS 16

static int parse_fractions(const char *s, double *out) {
  int n = 0;
  while (s && *s && n < MAX_FRACTIONS) {
    char *end;
    double f = strtod(s, &end);
    if (end == s || !(f > 0.0 && f <= 1.0)) return 0;
    out[n++] = f;
    s = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') return 0;
  }
  return s && *s ? 0 : n;
}

static int parse_positive(const char *s, double *out) {
  char *end;
  if (!s) return 1;
  *out = strtod(s, &end);
  return end != s && !*end && *out >= 0.0;
}

typedef struct row {
  int predictor;
  double fraction;
  ikv_sim_result r;
} row;

static void write_svg(FILE *f, const row *rows, int n_rows, const double *fr, int n_fr) {
  static const char *const colors[IKV_PREDICTOR_COUNT] = {"#888888", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e",
                                                           "#d62728"};
  const double W = 640, H = 420, L = 60, R = 170, T = 30, B = 50, xmax = fr[n_fr - 1] > 0 ? fr[n_fr - 1] : 1;
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
             "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
  fprintf(f, "<text x=\"%.0f\" y=\"18\">hit rate against GPU cache size (fraction of the trace's KV bytes)</text>\n", L);
  for (int k = 0; k <= 10; k += 2) { /* y grid: hit rate */
    const double y = T + (H - T - B) * (1.0 - k / 10.0);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%.0f\" y=\"%.1f\" "
               "text-anchor=\"end\">%.1f</text>\n", L, y, W - R, y, L - 6, y + 4, k / 10.0);
  }
  for (int i = 0; i < n_fr; i++) { /* x ticks: the fractions */
    const double x = L + (W - L - R) * fr[i] / xmax;
    fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n", x, H - B + 18, fr[i]);
  }
  fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
  fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T, L, H - B);
  for (int p = 0; p < IKV_PREDICTOR_COUNT; p++) {
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[p]);
    for (int i = 0; i < n_rows; i++)
      if (rows[i].predictor == p)
        fprintf(f, "%.1f,%.1f ", L + (W - L - R) * rows[i].fraction / xmax, T + (H - T - B) * (1.0 - rows[i].r.hit_rate));
    fprintf(f, "\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", W - R + 12, T + 16.0 * (p + 1), colors[p],
            ikv_predictor_name(p));
  }
  fputs("</svg>\n", f);
}

int ikv_cmd_sim(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  char b1[4096], b2[4096], b3[4096];
  const char *path = ikv_user_path(ikv_flag_value(argc, argv, "--trace"), b1, sizeof(b1)),
             *csv = ikv_user_path(ikv_flag_value(argc, argv, "--csv"), b2, sizeof(b2)),
             *svg = ikv_user_path(ikv_flag_value(argc, argv, "--svg"), b3, sizeof(b3));
  const int json = ikv_has_flag(argc, argv, "--json");
  double fr[MAX_FRACTIONS] = {0.05, 0.1, 0.2, 0.3, 0.5};
  int n_fr = 5;
  ikv_sim_params p = {.link_gbs = 50.0, .step_us = 10000.0};
  const char *frs = ikv_flag_value(argc, argv, "--fractions");
  if (!path || (frs && !(n_fr = parse_fractions(frs, fr))) || !parse_positive(ikv_flag_value(argc, argv, "--link-gbs"), &p.link_gbs) ||
      !parse_positive(ikv_flag_value(argc, argv, "--step-us"), &p.step_us) || !(p.link_gbs > 0)) {
    fputs(path ? "ikv sim: bad --fractions (0 < f <= 1, comma-separated), --link-gbs or --step-us\n"
               : "ikv sim: --trace FILE is required\n", stderr);
    return 2;
  }
  for (int i = 1; i < n_fr; i++) /* ascending, for the plot */
    for (int j = i; j > 0 && fr[j] < fr[j - 1]; j--) {
      double x = fr[j];
      fr[j] = fr[j - 1], fr[j - 1] = x;
    }
  FILE *in = fopen(path, "r");
  if (!in) {
    perror(path);
    return 1;
  }
  ikv_trace t;
  char err[160] = "";
  ikv_status st = ikv_trace_read(in, &t, err, sizeof(err));
  fclose(in);
  if (st != IKV_OK) {
    fprintf(stderr, "ikv sim: %s: %s%s%s\n", path, ikv_status_str(st), err[0] ? ": " : "", err);
    return 1;
  }
  row rows[MAX_FRACTIONS * IKV_PREDICTOR_COUNT];
  int n = 0;
  const int progress = isatty(2);
  for (int pr = 0; pr < IKV_PREDICTOR_COUNT && st == IKV_OK; pr++)
    for (int i = 0; i < n_fr && st == IKV_OK; i++) {
      if (progress) fprintf(stderr, "\rikv sim: %s at %g (%d of %d)   ", ikv_predictor_name(pr), fr[i], n + 1, IKV_PREDICTOR_COUNT * n_fr);
      p.predictor = (ikv_predictor)pr, p.cache_fraction = fr[i];
      rows[n] = (row){pr, fr[i], {0}};
      st = ikv_sim_run(&t, &p, &rows[n].r);
      n++;
    }
  if (progress) fputs("\r                                                    \r", stderr);
  if (st != IKV_OK) {
    fprintf(stderr, "ikv sim: %s\n", ikv_status_str(st));
    ikv_trace_free(&t);
    return 1;
  }
  if (json) {
    printf("{\"sim\": \"%s\", \"steps\": %u, \"page_reads\": %zu, \"trace_bytes\": %llu, \"link_gbs\": %g, \"step_us\": %g, "
           "\"results\": [", path, t.n_steps, t.n_refs, (unsigned long long)rows[0].r.trace_bytes, p.link_gbs, p.step_us);
    for (int i = 0; i < n; i++)
      printf("%s{\"predictor\": \"%s\", \"cache_fraction\": %g, \"hit_rate\": %.4f, \"bytes_h2d\": %llu, "
             "\"bytes_prefetch\": %llu, \"stall_us_per_step\": %.1f}", i ? ", " : "", ikv_predictor_name(rows[i].predictor),
             rows[i].fraction, rows[i].r.hit_rate, (unsigned long long)(rows[i].r.bytes_demand + rows[i].r.bytes_prefetch),
             (unsigned long long)rows[i].r.bytes_prefetch, rows[i].r.stall_us_per_step);
    printf("]}\n");
  } else {
    printf("ikv sim: %s: %u steps, %zu page reads, %.2f GB of distinct pages; link %g GB/s, step %g us\n", path, t.n_steps,
           t.n_refs, rows[0].r.trace_bytes / 1e9, p.link_gbs, p.step_us);
    printf("%-16s %8s %8s %12s %12s %14s\n", "predictor", "cache", "hit_rate", "GB_h2d", "GB_prefetch", "stall_us/step");
    for (int i = 0; i < n; i++)
      printf("%-16s %8g %8.4f %12.2f %12.2f %14.1f\n", ikv_predictor_name(rows[i].predictor), rows[i].fraction,
             rows[i].r.hit_rate, (rows[i].r.bytes_demand + rows[i].r.bytes_prefetch) / 1e9, rows[i].r.bytes_prefetch / 1e9,
             rows[i].r.stall_us_per_step);
  }
  int rc = 0;
  if (csv) {
    FILE *f = fopen(csv, "w");
    if (f) {
      fputs("predictor,cache_fraction,hit_rate,bytes_h2d,bytes_prefetch,stall_us_per_step\n", f);
      for (int i = 0; i < n; i++)
        fprintf(f, "%s,%g,%.6f,%llu,%llu,%.3f\n", ikv_predictor_name(rows[i].predictor), rows[i].fraction, rows[i].r.hit_rate,
                (unsigned long long)(rows[i].r.bytes_demand + rows[i].r.bytes_prefetch),
                (unsigned long long)rows[i].r.bytes_prefetch, rows[i].r.stall_us_per_step);
    }
    if (!f || fclose(f)) perror(csv), rc = 1;
  }
  if (svg) {
    FILE *f = fopen(svg, "w");
    if (f) write_svg(f, rows, n, fr, n_fr);
    if (!f || fclose(f)) perror(svg), rc = 1;
  }
  ikv_trace_free(&t);
  return rc;
}
