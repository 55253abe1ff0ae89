/* The engine's mutex.
 *
 * CPython 3.13 and later: PyMutex (a one-byte futex-style lock, correct on free-threaded builds;
 * it detaches the thread state while it waits).
 *
 * CPython 3.11 and 3.12 always run with a GIL. The engine takes these locks only while holding
 * the GIL and never releases the GIL while holding one, so the GIL already makes the test and
 * the set below one atomic step, and no other thread can find the lock held. The loop is a
 * safety net that lets a holder run if that rule were ever broken. (Cython's pymutex falls back
 * to PyThread locks there, whose every acquire reads the monotonic clock: several times the
 * cost of the work the lock guards on the publish and receive paths.)
 */
#ifndef KINCIR_LOCK_H
#define KINCIR_LOCK_H

#include <Python.h>

#if PY_VERSION_HEX >= 0x030D0000

typedef PyMutex kincir_mutex;

static inline void kincir_mutex_lock(kincir_mutex *m) { PyMutex_Lock(m); }
static inline void kincir_mutex_unlock(kincir_mutex *m) { PyMutex_Unlock(m); }

#else

typedef struct { int locked; } kincir_mutex;

static inline void kincir_mutex_lock(kincir_mutex *m) {
    while (m->locked) {
        Py_BEGIN_ALLOW_THREADS
        Py_END_ALLOW_THREADS
    }
    m->locked = 1;
}

static inline void kincir_mutex_unlock(kincir_mutex *m) { m->locked = 0; }

#endif

#endif /* KINCIR_LOCK_H */
