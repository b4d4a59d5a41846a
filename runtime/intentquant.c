/* IntentQuant: the one table from (use, memory pressure) to page precision.
 *
 * Bands of memory pressure: relaxed [0, 0.5), moderate [0.5, 0.7), high
 * [0.7, 0.9), critical [0.9, 1]. The ladder, by fidelity and bytes (page
 * formats v1, docs/results.md): FP16 > INT8 > FP8 > INT4 > SKIP. */
#include "runtime/runtime_internal.h"

#define S IKV_SKIP
static const uint8_t table[IKV_USE_COUNT][4] = {
    /*                     relaxed    moderate   high          critical */
    [IKV_USE_SINK] = {IKV_FP16, IKV_FP16, IKV_FP16, IKV_FP16},
    [IKV_USE_ALWAYS] = {IKV_FP16, IKV_FP16, IKV_INT8, IKV_FP8_E4M3},
    [IKV_USE_RECENT] = {IKV_FP16, IKV_FP16, IKV_FP16, IKV_INT8}, /* never below FP8 */
    [IKV_USE_ATTEND_HIGH] = {IKV_FP16, IKV_FP16, IKV_INT8, IKV_FP8_E4M3},
    [IKV_USE_ATTEND_MID] = {IKV_FP16, IKV_INT8, IKV_FP8_E4M3, IKV_INT4},
    [IKV_USE_ATTEND_LOW] = {IKV_FP16, IKV_FP8_E4M3, IKV_INT4, S},
};
#undef S

static int band(float pressure) {
  if (!(pressure >= 0.5f)) return 0; /* NaN reads as relaxed; plan_build refuses it first */
  if (pressure < 0.7f) return 1;
  return pressure < 0.9f ? 2 : 3;
}

uint8_t ikv_intentquant(ikv_use_class use, float memory_pressure) {
  if ((unsigned)use >= IKV_USE_COUNT) return IKV_SKIP;
  return table[use][band(memory_pressure)];
}

ikv_use_class ikv_attend_class(float score) {
  if (score >= 0.7f) return IKV_USE_ATTEND_HIGH;
  return score >= 0.3f ? IKV_USE_ATTEND_MID : IKV_USE_ATTEND_LOW;
}

const uint8_t rt_rank[256] = {[IKV_FP16] = 4, [IKV_BF16] = 4, [IKV_INT8] = 3, [IKV_FP8_E4M3] = 2, [IKV_INT4] = 1};
