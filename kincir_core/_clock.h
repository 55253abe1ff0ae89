/* The publish path's wall clock.
 *
 * Every published message is stamped with the Unix time in milliseconds (``enqueued_at``). A
 * precise clock read (CLOCK_REALTIME through the vDSO) costs about 26 ns on a typical x86-64
 * VM: as much as the whole of queue.SimpleQueue.put. Linux keeps a coarse copy of the same
 * clock, updated every kernel tick (1 to 4 ms), that reads in about 6 ns; a millisecond stamp
 * taken from it is at most one tick old. Elsewhere (macOS, Windows) there is none, and the
 * caller reads the precise clock.
 */
#ifndef KINCIR_CLOCK_H
#define KINCIR_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Unix time in nanoseconds from the kernel's coarse clock; -1 where there is none. */
static inline int64_t kincir_coarse_time_ns(void) {
#ifdef CLOCK_REALTIME_COARSE
    struct timespec t;
    if (clock_gettime(CLOCK_REALTIME_COARSE, &t) == 0) {
        return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
    }
#endif
    return -1;
}

#endif
