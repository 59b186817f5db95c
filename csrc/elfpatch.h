/* elfpatch.h: rewriting the global-offset-table slots of loaded objects.
 *
 * A call from a shared object to a function of another (malloc in libc,
 * say) goes through a slot of the caller's global offset table, filled by
 * the dynamic loader. Writing our function's address into every slot that
 * names malloc sends every library's calls to us, without LD_PRELOAD and
 * without a restart; writing the old values back undoes it exactly.
 *
 * The slots are found through dl_iterate_phdr: for each loaded object,
 * its dynamic section gives the symbol and string tables and the
 * relocation tables (DT_JMPREL for calls through the PLT, DT_RELA for the
 * GLOB_DAT slots that -fno-plt code and function addresses use). Slots in
 * the read-only part after relocation (PT_GNU_RELRO) are made writable for
 * the write and read-only again after it.
 *
 * Thread safety: one lock of this unit's own; no GIL needed. A slot is one
 * aligned word, written atomically: a thread calling through it at that
 * moment reaches either function.
 */
#ifndef MEMLENS_ELFPATCH_H
#define MEMLENS_ELFPATCH_H

#include "common.h"

typedef struct {
    const char *name; /* The symbol, without version. */
    void *hook;       /* What its slots get. */
    int interpreter;  /* Also in the interpreter's own object (dlopen). */
} memlens_elfpatch_symbol;

/* Patches, in every loaded object not patched yet, each slot naming one
 * of `symbols` (kept by pointer: the same table each time). Left
 * alone: memlens's own object, the dynamic loader, the vDSO, the
 * sanitizers' and valgrind's runtimes; in the interpreter's object (the
 * one holding libpython), only the symbols marked `interpreter`. After a
 * dlopen, memlens_elfpatch_extend patches what it loaded. 0, or -1 with
 * errno set (what was patched stays patched, and is restored later). */
int memlens_elfpatch_apply(const memlens_elfpatch_symbol *symbols, size_t n);

/* memlens_elfpatch_apply after a dlopen: only while the hooks are in
 * place (a dlopen that raced memlens_elfpatch_restore patches nothing). */
int memlens_elfpatch_extend(const memlens_elfpatch_symbol *symbols, size_t n);

/* Forgets the objects (and their slots) no longer loaded: after a
 * dlclose, a later object at the same address is a new one. */
void memlens_elfpatch_forget_unloaded(void);

/* Writes every slot back to the value it had before, in the objects
 * still loaded, where it still holds our hook (a slot someone else wrote
 * since is theirs). Returns the slots left alone. Where the slots are is
 * kept: the next apply writes them again without reading the objects'
 * relocations, unless an object was unloaded meanwhile. */
size_t memlens_elfpatch_restore(void);

/* How many objects the last apply read the relocations of: the others
 * were known from an earlier apply (tests). */
size_t memlens_elfpatch_last_reads(void);

/* One patched slot, for the tests that read them back. */
typedef struct {
    const char *object; /* Its path ("" for the main program). */
    const char *symbol;
    uintptr_t slot;
    void *original;
    void *hook;
} memlens_elfpatch_slot;

/* Calls `visit` on each patched slot, under the unit's lock (visit must
 * not call back in); stops at a nonzero return and passes it on. */
int memlens_elfpatch_each(int (*visit)(const memlens_elfpatch_slot *, void *),
                          void *arg);

/* Registers the fork handlers. 0, or -1 with errno. */
int memlens_elfpatch_init(void);

#endif
