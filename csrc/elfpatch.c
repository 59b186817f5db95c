/* elfpatch.c: rewriting the global-offset-table slots of loaded objects
 * (elfpatch.h says what and why).
 *
 * State, under elfpatch_lock: the objects seen (by load address and
 * program headers, which a reload at the same address may share: hence
 * memlens_elfpatch_forget_unloaded after each dlclose) and, per patched
 * slot, its address, its old value and the hook written. Memory from
 * libc.
 *
 * The objects and their slots stay known after a restore: finding the
 * slots reads every relocation of every object (milliseconds, with a big
 * library such as Arrow loaded), and the next apply only writes the known
 * slots again. The loader's count of objects unloaded (dlpi_subs) says
 * whether that knowledge still holds: any unload since, and it is
 * dropped, and every object read again.
 */
#include "elfpatch.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ELFPATCH_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#define ELFPATCH_R_GLOB_DAT R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define ELFPATCH_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define ELFPATCH_R_GLOB_DAT R_AARCH64_GLOB_DAT
#else
#error "memlens: native tracing knows the relocations of x86-64 and AArch64"
#endif

/* An object is known by its load address, program headers, dynamic
 * section and name together: another library loaded where a gone one
 * was shares the address, and most often the headers' address too. */
typedef struct {
    uintptr_t base;          /* dlpi_addr. */
    const ElfW(Phdr) * phdr; /* dlpi_phdr. */
    uintptr_t dynamic;       /* Where PT_DYNAMIC is loaded (0: none). */
    char *name;              /* Owned (libc). */
    int seen;                /* Found by the last walk. */
} elfpatch_object;

typedef struct {
    size_t object; /* Index in elfpatch_objects. */
    const memlens_elfpatch_symbol *symbol;
    uintptr_t slot;
    void *original;
    int readonly; /* In PT_GNU_RELRO: made writable only to be written. */
    int patched;  /* The hook was written by the current apply. */
} elfpatch_record;

static pthread_mutex_t elfpatch_lock = PTHREAD_MUTEX_INITIALIZER;
static elfpatch_object *elfpatch_objects = NULL;
static size_t elfpatch_nobjects = 0, elfpatch_capobjects = 0;
static elfpatch_record *elfpatch_records = NULL;
static size_t elfpatch_nrecords = 0, elfpatch_caprecords = 0;
/* Whether the recorded slots hold the hooks (between apply and restore). */
static int elfpatch_active = 0;
/* The symbols the records name, and the loader's count of unloads when
 * the objects were last checked against the loaded ones: the records are
 * reused by the next apply only if both are unchanged. */
static const memlens_elfpatch_symbol *elfpatch_known_symbols = NULL;
static unsigned long long elfpatch_known_subs = 0;
/* The objects whose relocations the last apply read. */
static size_t elfpatch_last_reads = 0;

/* The walk's arguments and outcome (under the lock). */
typedef struct {
    const memlens_elfpatch_symbol *symbols;
    size_t nsymbols;
    int error;   /* errno of the first failure, 0 if none. */
    int checked; /* The first object visited has checked the records. */
    int again;   /* Known objects' recorded slots are to be written. */
    unsigned long long subs; /* The loader's unload count, (unsigned)-1
                                when it does not say. */
    size_t reads;            /* Objects whose relocations were read. */
} elfpatch_walk;

/* The loader's count of objects unloaded so far, or -1 when this loader
 * does not give it (then nothing known is reused). */
static unsigned long long
elfpatch_subs_of(const struct dl_phdr_info *info, size_t size)
{
    if (size
        < offsetof(struct dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
        return (unsigned long long)-1;
    }
    return info->dlpi_subs;
}

/* Forgets every object and record. Under the lock, not active. */
static void
elfpatch_forget_all(void)
{
    for (size_t i = 0; i < elfpatch_nobjects; i++) {
        free(elfpatch_objects[i].name);
    }
    free(elfpatch_objects);
    free(elfpatch_records);
    elfpatch_objects = NULL;
    elfpatch_records = NULL;
    elfpatch_nobjects = elfpatch_capobjects = 0;
    elfpatch_nrecords = elfpatch_caprecords = 0;
    elfpatch_known_symbols = NULL;
}

/* Whether `addr` lies in one of the object's loaded segments. */
static int
elfpatch_holds(const struct dl_phdr_info *info, uintptr_t addr)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= start
            && addr - start < ph->p_memsz) {
            return 1;
        }
    }
    return 0;
}

/* Objects whose slots are never ours to write: the loader's (its malloc
 * is not libc's), the vDSO's, and the runtimes that replace malloc
 * themselves and call the real one through their own slots. */
static int
elfpatch_left_alone(const struct dl_phdr_info *info)
{
    static const char *const runtimes[] = {
        "linux-vdso", "linux-gate", "/libasan.", "/libubsan.",
        "/libtsan.",  "/liblsan.",  "/libmsan.", "vgpreload",
    };
    if (info->dlpi_addr != 0 && info->dlpi_addr == getauxval(AT_BASE)) {
        return 1;
    }
    if (elfpatch_holds(info, (uintptr_t)&memlens_elfpatch_apply)) {
        return 1;
    }
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    for (size_t i = 0; i < sizeof(runtimes) / sizeof(runtimes[0]); i++) {
        if (strstr(name, runtimes[i]) != NULL) {
            return 1;
        }
    }
    return 0;
}

/* Where the object's dynamic section is loaded, or 0. */
static uintptr_t
elfpatch_dynamic_of(const struct dl_phdr_info *info)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC) {
            return info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
        }
    }
    return 0;
}

/* The object already known by this identity, or -1. */
static long
elfpatch_find_object(const struct dl_phdr_info *info)
{
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    for (size_t i = 0; i < elfpatch_nobjects; i++) {
        const elfpatch_object *o = &elfpatch_objects[i];
        if (o->base == info->dlpi_addr && o->phdr == info->dlpi_phdr
            && o->name != NULL && o->dynamic == elfpatch_dynamic_of(info)
            && strcmp(o->name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

/* A pointer of the dynamic section: the loader has made most absolute;
 * one still below the load address is relative to it. */
static uintptr_t
elfpatch_dyn_ptr(const struct dl_phdr_info *info, ElfW(Addr) value)
{
    return value < info->dlpi_addr ? info->dlpi_addr + value : value;
}

/* Whether the page of `slot` is in the object's read-only-after-
 * relocation range (the loader protects its whole pages only). */
static int
elfpatch_in_relro(const struct dl_phdr_info *info, uintptr_t slot)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_GNU_RELRO) {
            continue;
        }
        uintptr_t start = (info->dlpi_addr + ph->p_vaddr) & ~(page - 1);
        uintptr_t end =
            (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(page - 1);
        if (slot >= start && slot < end) {
            return 1;
        }
    }
    return 0;
}

/* Writes `value` into the slot; 0, or -1 with errno. */
static int
elfpatch_write(uintptr_t slot, void *value, int readonly)
{
    if (!readonly) {
        __atomic_store_n((void **)slot, value, __ATOMIC_SEQ_CST);
        return 0;
    }
    uintptr_t size = (uintptr_t)sysconf(_SC_PAGESIZE);
    void *page = (void *)(slot & ~(size - 1));
    if (mprotect(page, size, PROT_READ | PROT_WRITE) != 0) {
        return -1;
    }
    __atomic_store_n((void **)slot, value, __ATOMIC_SEQ_CST);
    return mprotect(page, size, PROT_READ);
}

/* The symbol of ours named `name`, or NULL. */
static const memlens_elfpatch_symbol *
elfpatch_wanted(const elfpatch_walk *w, const char *name, int interpreter)
{
    for (size_t i = 0; i < w->nsymbols; i++) {
        const memlens_elfpatch_symbol *s = &w->symbols[i];
        if (s->name[0] == name[0] && strcmp(s->name, name) == 0) {
            return interpreter && !s->interpreter ? NULL : s;
        }
    }
    return NULL;
}

/* Patches the slots of one relocation table of the object at index
 * `object`. */
static void
elfpatch_table(elfpatch_walk *w, const struct dl_phdr_info *info,
               size_t object, int interpreter, const ElfW(Rela) * rela,
               size_t count, const ElfW(Sym) * symtab, const char *strtab)
{
    for (size_t k = 0; k < count; k++) {
        unsigned long type = ELF64_R_TYPE(rela[k].r_info);
        if (type != ELFPATCH_R_JUMP_SLOT && type != ELFPATCH_R_GLOB_DAT) {
            continue;
        }
        const ElfW(Sym) *sym = &symtab[ELF64_R_SYM(rela[k].r_info)];
        const memlens_elfpatch_symbol *s =
            elfpatch_wanted(w, strtab + sym->st_name, interpreter);
        if (s == NULL) {
            continue;
        }
        uintptr_t slot = info->dlpi_addr + rela[k].r_offset;
        void *now = __atomic_load_n((void **)slot, __ATOMIC_SEQ_CST);
        if (now == s->hook) {
            continue; /* Listed twice (JMPREL inside RELA). */
        }
        if (memlens_grow((void **)&elfpatch_records, &elfpatch_caprecords,
                         elfpatch_nrecords, sizeof(elfpatch_record), 64)
            < 0) {
            w->error = w->error ? w->error : ENOMEM;
            return;
        }
        int readonly = elfpatch_in_relro(info, slot);
        if (elfpatch_write(slot, s->hook, readonly) < 0) {
            w->error = w->error ? w->error : errno;
            continue;
        }
        elfpatch_record *r = &elfpatch_records[elfpatch_nrecords++];
        r->object = object;
        r->symbol = s;
        r->slot = slot;
        r->original = now;
        r->readonly = readonly;
        r->patched = 1;
    }
}

/* Writes the hooks again into the recorded slots of the known object at
 * index `object`, taking their values now as the ones to restore. */
static void
elfpatch_rewrite(elfpatch_walk *w, size_t object)
{
    for (size_t k = 0; k < elfpatch_nrecords; k++) {
        elfpatch_record *r = &elfpatch_records[k];
        if (r->object != object) {
            continue;
        }
        void *now = __atomic_load_n((void **)r->slot, __ATOMIC_SEQ_CST);
        if (now == r->symbol->hook) {
            /* A restore failed here: the original is still the one. */
            r->patched = 1;
        }
        else if (elfpatch_write(r->slot, r->symbol->hook, r->readonly) < 0) {
            w->error = w->error ? w->error : errno;
        }
        else {
            r->original = now;
            r->patched = 1;
        }
    }
}

/* dl_iterate_phdr's callback for memlens_elfpatch_apply. */
static int
elfpatch_visit(struct dl_phdr_info *info, size_t size, void *arg)
{
    elfpatch_walk *w = arg;
    if (!w->checked) {
        /* The loader holds its lock through the walk: the objects it
         * shows are loaded, and the count is theirs. */
        w->checked = 1;
        w->subs = elfpatch_subs_of(info, size);
        /* A loader that does not count unloads cannot vouch for what is
         * known. */
        if (w->again
            && (w->subs == (unsigned long long)-1
                || w->subs != elfpatch_known_subs
                || w->symbols != elfpatch_known_symbols)) {
            elfpatch_forget_all();
        }
        elfpatch_known_symbols = w->symbols;
    }
    long known = elfpatch_find_object(info);
    if (known >= 0) {
        elfpatch_objects[known].seen = 1;
        if (w->again) {
            elfpatch_rewrite(w, (size_t)known);
        }
        return 0;
    }
    if (memlens_grow((void **)&elfpatch_objects, &elfpatch_capobjects,
                     elfpatch_nobjects, sizeof(elfpatch_object), 32)
        < 0) {
        w->error = w->error ? w->error : ENOMEM;
        return 0;
    }
    char *name = strdup(info->dlpi_name ? info->dlpi_name : "");
    if (name == NULL) {
        w->error = w->error ? w->error : ENOMEM;
        return 0;
    }
    size_t object = elfpatch_nobjects++;
    elfpatch_objects[object].base = info->dlpi_addr;
    elfpatch_objects[object].phdr = info->dlpi_phdr;
    elfpatch_objects[object].dynamic = elfpatch_dynamic_of(info);
    elfpatch_objects[object].name = name;
    elfpatch_objects[object].seen = 1;
    if (elfpatch_left_alone(info)) {
        return 0;
    }
    const ElfW(Dyn) *dyn = (const ElfW(Dyn) *)elfpatch_objects[object].dynamic;
    if (dyn == NULL) {
        return 0;
    }
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *jmprel = NULL, *rela = NULL;
    size_t jmprel_size = 0, rela_size = 0;
    int pltrel_rela = 1;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
            case DT_SYMTAB:
                symtab =
                    (const ElfW(Sym) *)elfpatch_dyn_ptr(info, dyn->d_un.d_ptr);
                break;
            case DT_STRTAB:
                strtab = (const char *)elfpatch_dyn_ptr(info, dyn->d_un.d_ptr);
                break;
            case DT_JMPREL:
                jmprel = (const ElfW(Rela) *)elfpatch_dyn_ptr(info,
                                                              dyn->d_un.d_ptr);
                break;
            case DT_PLTRELSZ:
                jmprel_size = dyn->d_un.d_val;
                break;
            case DT_PLTREL:
                pltrel_rela = dyn->d_un.d_val == DT_RELA;
                break;
            case DT_RELA:
                rela = (const ElfW(Rela) *)elfpatch_dyn_ptr(info,
                                                            dyn->d_un.d_ptr);
                break;
            case DT_RELASZ:
                rela_size = dyn->d_un.d_val;
                break;
            default:
                break;
        }
    }
    if (symtab == NULL || strtab == NULL || !pltrel_rela) {
        return 0;
    }
    w->reads++;
    /* The interpreter's own calls to the allocators are the Python
     * allocators' (hooked already) or its own: only its dlopen. */
    int interpreter = elfpatch_holds(info, (uintptr_t)&PyEval_SaveThread);
    if (jmprel != NULL) {
        elfpatch_table(w, info, object, interpreter, jmprel,
                       jmprel_size / sizeof(ElfW(Rela)), symtab, strtab);
    }
    if (rela != NULL) {
        elfpatch_table(w, info, object, interpreter, rela,
                       rela_size / sizeof(ElfW(Rela)), symtab, strtab);
    }
    return 0;
}

static void elfpatch_drop_unseen(void);

/* memlens_elfpatch_apply, and with `only_active` memlens_elfpatch_extend. */
static int
elfpatch_walk_all(const memlens_elfpatch_symbol *symbols, size_t n,
                  int only_active)
{
    elfpatch_walk w = {symbols, n, 0, 0, 0, 0, 0};
    pthread_mutex_lock(&elfpatch_lock);
    if (only_active && !elfpatch_active) {
        /* A dlopen that raced the stop: nothing to extend. */
        pthread_mutex_unlock(&elfpatch_lock);
        return 0;
    }
    w.again = !elfpatch_active;
    /* The walk marks the objects it finds: those it does not were
     * unloaded where no dlclose hook saw it, and their records go. */
    for (size_t i = 0; i < elfpatch_nobjects; i++) {
        elfpatch_objects[i].seen = 0;
    }
    dl_iterate_phdr(elfpatch_visit, &w);
    elfpatch_drop_unseen();
    elfpatch_known_subs = w.subs;
    elfpatch_active = 1;
    elfpatch_last_reads = w.reads;
    pthread_mutex_unlock(&elfpatch_lock);
    if (w.error != 0) {
        errno = w.error;
        return -1;
    }
    return 0;
}

int
memlens_elfpatch_apply(const memlens_elfpatch_symbol *symbols, size_t n)
{
    return elfpatch_walk_all(symbols, n, 0);
}

int
memlens_elfpatch_extend(const memlens_elfpatch_symbol *symbols, size_t n)
{
    return elfpatch_walk_all(symbols, n, 1);
}

/* dl_iterate_phdr's callback marking the objects still loaded; `arg`
 * receives the loader's unload count. */
static int
elfpatch_mark(struct dl_phdr_info *info, size_t size, void *arg)
{
    *(unsigned long long *)arg = elfpatch_subs_of(info, size);
    long known = elfpatch_find_object(info);
    if (known >= 0) {
        elfpatch_objects[known].seen = 1;
    }
    return 0;
}

/* Marks the objects loaded now (seen) and the others not. Under the
 * lock. */
static void
elfpatch_mark_loaded(void)
{
    for (size_t i = 0; i < elfpatch_nobjects; i++) {
        elfpatch_objects[i].seen = 0;
    }
    unsigned long long subs = (unsigned long long)-1;
    dl_iterate_phdr(elfpatch_mark, &subs);
    elfpatch_known_subs = subs;
}

/* Drops the records of the objects not seen by the last mark or walk,
 * and those objects' identities. Under the lock. */
static void
elfpatch_drop_unseen(void)
{
    /* Objects keep their indices (records name them): a gone one only
     * loses its identity, and its records go. */
    size_t kept = 0;
    for (size_t k = 0; k < elfpatch_nrecords; k++) {
        if (elfpatch_objects[elfpatch_records[k].object].seen) {
            elfpatch_records[kept++] = elfpatch_records[k];
        }
    }
    elfpatch_nrecords = kept;
    for (size_t i = 0; i < elfpatch_nobjects; i++) {
        if (!elfpatch_objects[i].seen) {
            elfpatch_objects[i].base = 0;
            elfpatch_objects[i].phdr = NULL;
        }
    }
}

void
memlens_elfpatch_forget_unloaded(void)
{
    pthread_mutex_lock(&elfpatch_lock);
    elfpatch_mark_loaded();
    elfpatch_drop_unseen();
    pthread_mutex_unlock(&elfpatch_lock);
}

size_t
memlens_elfpatch_restore(void)
{
    size_t left = 0;
    pthread_mutex_lock(&elfpatch_lock);
    elfpatch_mark_loaded();
    /* Backwards: a slot listed twice gets its first (true) value last. */
    for (size_t k = elfpatch_nrecords; k-- > 0;) {
        elfpatch_record *r = &elfpatch_records[k];
        if (!r->patched || !elfpatch_objects[r->object].seen) {
            continue;
        }
        r->patched = 0;
        void *now = __atomic_load_n((void **)r->slot, __ATOMIC_SEQ_CST);
        if (now != r->symbol->hook
            || elfpatch_write(r->slot, r->original, r->readonly) < 0) {
            left++;
        }
    }
    /* Kept for the next apply, as of the objects loaded now. */
    elfpatch_drop_unseen();
    elfpatch_active = 0;
    pthread_mutex_unlock(&elfpatch_lock);
    return left;
}

size_t
memlens_elfpatch_last_reads(void)
{
    pthread_mutex_lock(&elfpatch_lock);
    size_t reads = elfpatch_last_reads;
    pthread_mutex_unlock(&elfpatch_lock);
    return reads;
}

int
memlens_elfpatch_each(int (*visit)(const memlens_elfpatch_slot *, void *),
                      void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&elfpatch_lock);
    for (size_t k = 0; k < elfpatch_nrecords && rc == 0; k++) {
        const elfpatch_record *r = &elfpatch_records[k];
        if (!r->patched) {
            continue;
        }
        memlens_elfpatch_slot s = {elfpatch_objects[r->object].name,
                                   r->symbol->name, r->slot, r->original,
                                   r->symbol->hook};
        rc = visit(&s, arg);
    }
    pthread_mutex_unlock(&elfpatch_lock);
    return rc;
}

/* A fork while another thread patches would leave the child's lock held
 * for good: hold it across the fork. */
static void
elfpatch_atfork_prepare(void)
{
    pthread_mutex_lock(&elfpatch_lock);
}

static void
elfpatch_atfork_release(void)
{
    pthread_mutex_unlock(&elfpatch_lock);
}

int
memlens_elfpatch_init(void)
{
    static int registered = 0;
    if (!registered) {
        int rc =
            pthread_atfork(elfpatch_atfork_prepare, elfpatch_atfork_release,
                           elfpatch_atfork_release);
        if (rc != 0) {
            errno = rc;
            return -1;
        }
        registered = 1;
    }
    return 0;
}
