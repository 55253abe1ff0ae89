/* Synchronisation between processes through a shared mapping (Linux): atomics on words of the
 * mapping, futex waits and wakes on them, and robust process-shared mutexes.
 *
 * Every function takes an address inside a MAP_SHARED mapping, aligned to its word. The atomics
 * are sequentially consistent (GCC builtins), so a write made before a release-store of a word is
 * seen by the process that reads that word, on x86 and Arm alike. The futex calls are the shared
 * (not FUTEX_PRIVATE_FLAG) forms, since the waiters are in other processes. A robust mutex is
 * released by the kernel when its owner dies: the next lock returns EOWNERDEAD and the new owner
 * decides whether what the mutex guards is consistent (see _shm_sync.pyx).
 */
#ifndef KINCIR_SHM_SYNC_H
#define KINCIR_SHM_SYNC_H

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t kincir_atomic_load_u64(uint64_t *word) {
    return __atomic_load_n(word, __ATOMIC_SEQ_CST);
}

static inline void kincir_atomic_store_u64(uint64_t *word, uint64_t value) {
    __atomic_store_n(word, value, __ATOMIC_SEQ_CST);
}

static inline uint64_t kincir_atomic_add_u64(uint64_t *word, uint64_t delta) {
    return __atomic_fetch_add(word, delta, __ATOMIC_SEQ_CST);
}

static inline int kincir_atomic_cas_u64(uint64_t *word, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(word, &expected, desired, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}

static inline uint32_t kincir_atomic_load_u32(uint32_t *word) {
    return __atomic_load_n(word, __ATOMIC_SEQ_CST);
}

static inline void kincir_atomic_store_u32(uint32_t *word, uint32_t value) {
    __atomic_store_n(word, value, __ATOMIC_SEQ_CST);
}

static inline uint32_t kincir_atomic_add_u32(uint32_t *word, uint32_t delta) {
    return __atomic_fetch_add(word, delta, __ATOMIC_SEQ_CST);
}

/* Sleep while *word == expected, up to `seconds` (< 0: no limit). 0 when woken (or the word had
 * already changed), else the errno: ETIMEDOUT, or EINTR when a signal arrived. */
static inline int kincir_futex_wait(uint32_t *word, uint32_t expected, double seconds) {
    struct timespec timeout, *limit = NULL;
    if (seconds >= 0) {
        timeout.tv_sec = (time_t)seconds;
        timeout.tv_nsec = (long)((seconds - (double)timeout.tv_sec) * 1e9);
        limit = &timeout;
    }
    if (syscall(SYS_futex, word, FUTEX_WAIT, expected, limit, NULL, 0) == 0)
        return 0;
    return errno == EAGAIN ? 0 : errno;
}

/* Wake up to `count` processes waiting on *word; how many were woken, or -1 (errno set). */
static inline long kincir_futex_wake(uint32_t *word, int count) {
    return syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
}

/* Make *mutex a robust, process-shared mutex; 0 or an errno. */
static inline int kincir_shared_mutex_init(pthread_mutex_t *mutex) {
    pthread_mutexattr_t attr;
    int err = pthread_mutexattr_init(&attr);
    if (err)
        return err;
    err = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!err)
        err = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!err)
        err = pthread_mutex_init(mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    return err;
}

/* Lock, waiting up to `seconds` (< 0: no limit): 0, EOWNERDEAD (locked; its last owner died
 * holding it), ETIMEDOUT, ENOTRECOVERABLE, or another errno. */
/* a hint to the core that this is a spin-wait loop */
static inline void kincir_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline double kincir_monotonic(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static inline int kincir_shared_mutex_lock(pthread_mutex_t *mutex, double seconds) {
    struct timespec deadline;
    if (seconds < 0)
        return pthread_mutex_lock(mutex);
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)seconds;
    deadline.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1000000000L;
    }
    return pthread_mutex_timedlock(mutex, &deadline);
}

#endif /* KINCIR_SHM_SYNC_H */
