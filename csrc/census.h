/* census.h: the heap census, walked in C. */
#ifndef MEMLENS_CENSUS_H
#define MEMLENS_CENSUS_H

#include "common.h"

int memlens_census_init(PyObject *module);

#endif
