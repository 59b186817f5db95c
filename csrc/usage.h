/* usage.h: UsageSampler, the sampler of memlens.memory_usage(): this or
 * another process, RSS, PSS or USS, its descendants summed or each kept. */
#ifndef MEMLENS_USAGE_H
#define MEMLENS_USAGE_H

#include "common.h"

int memlens_usage_init_type(PyObject *module, memlens_state *st);

#endif
