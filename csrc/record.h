/* record.h: the recorder of `memlens run`: samples written as they are
 * taken to a data file in mprof's format, and a live meter. */
#ifndef MEMLENS_RECORD_H
#define MEMLENS_RECORD_H

#include "common.h"

int memlens_record_init_type(PyObject *module, memlens_state *st);

#endif
