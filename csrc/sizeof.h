/* sizeof.h: deep sizes walked in C. */
#ifndef MEMLENS_SIZEOF_H
#define MEMLENS_SIZEOF_H

#include "common.h"

int memlens_sizeof_init(PyObject *module);

#endif
