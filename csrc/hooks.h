/* hooks.h: allocator hooks on the raw, mem and obj domains. */
#ifndef MEMLENS_HOOKS_H
#define MEMLENS_HOOKS_H

#include "common.h"

/* 1 while our hooks sit in the allocator chain (recording or not). GIL. */
int memlens_hooks_installed(void);

/* Users that asked for the hooks (open measurements). GIL. */
long memlens_hooks_users(void);

int memlens_hooks_init(PyObject *module);

#endif
