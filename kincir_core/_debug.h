/* Live-object counts of the engine, kept only in a KINCIR_DEBUG=1 build.
 *
 * Each kind counts objects (or held ring slots) created minus freed; a test runs a workload on a
 * debug build, drops everything, and checks every count is back to zero. In a normal build the
 * calls compile to nothing and kincir_live_count returns -1.
 */
#ifndef KINCIR_DEBUG_H
#define KINCIR_DEBUG_H

#include <Python.h>

#define KINCIR_LIVE_KINDS 7

#ifdef KINCIR_DEBUG
#define KINCIR_DEBUG_BUILD 1
/* updated with the GIL held (3.11/3.12) or under the topic's lock (slots) */
static Py_ssize_t kincir_live[KINCIR_LIVE_KINDS];
static inline void KINCIR_LIVE(int kind, Py_ssize_t delta) { kincir_live[kind] += delta; }
static inline Py_ssize_t kincir_live_count(int kind) { return kincir_live[kind]; }
#else
#define KINCIR_DEBUG_BUILD 0
static inline void KINCIR_LIVE(int kind, Py_ssize_t delta) { (void)kind; (void)delta; }
static inline Py_ssize_t kincir_live_count(int kind) { (void)kind; return -1; }
#endif

#endif
