/* sampler.h: the native RSS sampling thread. */
#ifndef MEMLENS_SAMPLER_H
#define MEMLENS_SAMPLER_H

#include "common.h"
#include "readings.h"

#include <pthread.h>
#include <time.h>

/* What a sampler hands each sample to, besides its own arrays: the
 * recorder (record.c) writes it to a data file and draws the live meter.
 * `sample` is called by the sampler thread, without the GIL and without
 * the sampler's lock, or by stop() once the thread is joined; it must not
 * touch Python objects, must not raise, and returns the value the sampler
 * keeps (for example the RSS with the children's added). `t` is seconds
 * since the start (CLOCK_MONOTONIC). */
typedef struct memlens_sink {
    uint64_t (*sample)(struct memlens_sink *sink, double t, uint64_t rss);
} memlens_sink;

typedef struct {
    double interval;    /* Seconds. Set before start, then read-only. */
    memlens_sink *sink; /* Borrowed (its owner outlives the thread); NULL
                           for none. Set before start, then read-only. */
    int keep;           /* Keep every sample in times/values (the default;
                           a recorder writes them out instead). Set before
                           start, then read-only. */
    pid_t pid;          /* The process sampled: 0 for this one. Set
                           before start, then read-only. */
    int metric;         /* MEMLENS_METRIC_* (readings.h): what a sample
                           reads. Set before start, then read-only. */
    uint64_t limit;     /* The thread ends by itself after this many
                           samples; 0 for no limit. Set before start,
                           then read-only. */
    int first_now;      /* start() takes the first sample itself, before
                           the thread exists, and the thread the next one
                           an interval later. Set before start, then
                           read-only. */
    memlens_ownfd file; /* Owned: statm, or smaps_rollup for PSS and
                           USS. Opened by start, closed by stop, read (and
                           reopened when the program took its number) by
                           the thread in between. */
    char file_path[MEMLENS_PATH_MAX]; /* Where `file` was opened. Set by
                                         start, then read-only. */
    pthread_t thread;                 /* Valid while `running`. */
    pid_t owner_pid; /* The process that started the thread. */
    int running;     /* GIL (owner's side only). */
    int stopping;    /* stop() is joining the thread. GIL. */
    pthread_mutex_t lock;
    pthread_cond_t wake; /* Signalled by stop. */
    pthread_cond_t done; /* Broadcast when `finished` is set or stop is
                            asked, for memlens_sampler_wait. */
    int stop_requested;  /* Protected by lock. */
    int finished;        /* The thread ended by itself: `limit` samples
                            were taken, or the process sampled exited.
                            Protected by lock. */
    int gone;            /* The process sampled exited (or began to).
                            Protected by lock. */
    struct timespec t0;  /* CLOCK_MONOTONIC at start. Read-only. */
    double start_epoch;  /* time.time() at start. Read-only. */
    double *times;       /* Owned (libc). Protected by lock. */
    uint64_t *values;    /* Owned (libc). Protected by lock. */
    size_t count;        /* Samples kept in times/values. lock. */
    uint64_t taken;      /* Samples taken, kept or not. lock. */
    double peak_time;    /* Seconds since start of the peak. lock. */
    size_t cap;          /* Protected by lock. */
    uint64_t peak;       /* Protected by lock. */
    uint64_t failures;   /* Reads or growths that failed. lock. */
} memlens_sampler;

/* Prepares a stopped sampler. 0, or -1 with an exception. */
int memlens_sampler_init(memlens_sampler *s, double interval);

/* Starts the thread; no-op when running. A thread that ended by itself
 * (limit reached, process gone) is joined first and the sampler started
 * afresh. 0, or -1 with an exception. GIL held. Clears earlier samples. */
int memlens_sampler_start(memlens_sampler *s);

/* Stops and joins the thread (releasing the GIL while it waits) and takes
 * one last sample; no-op when stopped. GIL held. */
void memlens_sampler_stop(memlens_sampler *s);

/* Stops the thread and frees the buffers. GIL held. */
void memlens_sampler_fini(memlens_sampler *s);

/* Waits, releasing the GIL, until the thread ends by itself (limit
 * reached, process gone) or is asked to stop, or `timeout` seconds pass
 * (< 0, NaN or over 1e9: no timeout). Signals are checked every few tens of milliseconds.
 * 1 when it ended, 0 on timeout, -1 with an exception (a signal handler
 * raised). GIL held. */
int memlens_sampler_wait(memlens_sampler *s, double timeout);

/* Whether the thread runs and has not ended by itself. GIL held. */
int memlens_sampler_active(memlens_sampler *s);

/* Highest RSS sampled so far (0 before any). Any thread. */
uint64_t memlens_sampler_peak(memlens_sampler *s);

/* Seconds since start of `mono` (a CLOCK_MONOTONIC reading), on the
 * samples' clock. Any thread. */
double memlens_sampler_since(const memlens_sampler *s,
                             const struct timespec *mono);

/* Converts a Python interval to seconds: a finite real number between
 * 1e-06 and 86400. 0, or -1 with TypeError / ValueError. GIL held. */
int memlens_sampler_parse_interval(PyObject *obj, double *out);

/* Live sampler threads in this process (for the leak checks). Atomic. */
long memlens_sampler_threads(void);

int memlens_sampler_init_type(PyObject *module, memlens_state *st);

#endif
