/* peak.h: exact peak windows over the kernel's resettable high-water mark. */
#ifndef MEMLENS_PEAK_H
#define MEMLENS_PEAK_H

#include "common.h"

/* Open windows in this process (for the leak checks). GIL held. */
long memlens_peak_open_windows(void);

int memlens_peak_init_type(PyObject *module, memlens_state *st);

#endif
