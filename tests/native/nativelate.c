/* nativelate: a plain shared library, no Python in it, for the native
 * tracing tests. They load it with ctypes once tracing has started, to see
 * that an object opened later is covered too. Blocks have their pages
 * written, so that the kernel charges them to RSS. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void *
late_malloc(size_t size)
{
    void *p = malloc(size);
    if (p != NULL) {
        memset(p, 1, size);
    }
    return p;
}

void
late_free(void *p)
{
    free(p);
}

void *
late_mmap(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
    memset(p, 1, size);
    return p;
}

int
late_munmap(void *p, size_t size)
{
    return munmap(p, size);
}
