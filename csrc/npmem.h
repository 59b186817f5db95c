/* npmem.h: NumPy's array data, seen through NumPy's handler API. */
#ifndef MEMLENS_NPMEM_H
#define MEMLENS_NPMEM_H

#include "common.h"

int memlens_npmem_init(PyObject *module);

#endif
