# cython: language_level=3, embedsignature=True, binding=False
"""The message type and its delivered (stamped) copies.

Ownership: a Message holds its payload (any object, by reference; a ``bytearray`` or
``memoryview`` is snapshotted to ``bytes`` once, see ``to_payload``), its metadata dict (exact
``str`` keys and values, never mutated after construction, so copies share it) and its topic
string. Freeing a Message runs Python code only through its payload's last reference, which the
topic log never drops while holding its lock (it moves such payloads to its graves first). The
type is excluded from the cyclic GC, so a payload that refers back to its own Message forms a
cycle the collector cannot see (documented in the README). Its allocation is its own (see
``_new_message``): a freelist, and no ``None`` written into fields about to be set.

The uuid is 128 random bits from a xoshiro256** generator seeded from ``os.urandom`` (and
re-seeded in a forked child), stored as two integers and formatted only when ``uuid`` is read.
A message the engine builds from a payload published without a Message (``send``, a batch of
raw payloads) has no uuid yet (both integers 0, which no uuid4 is): it is drawn when first read
(``ensure_id``). Every reader of that message shares one delivered Message, so all of them see
the same uuid.
Nothing here waits or locks."""

cimport cython
from cpython.bytes cimport PyBytes_CheckExact
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint64_t

import os
from collections.abc import Mapping
from types import GenericAlias, MappingProxyType

cdef extern from "Python.h":
    """
    #define KINCIR_HAS_BUFFER_SLOT(o) (Py_TYPE(o)->tp_as_buffer != NULL)
    #define KINCIR_OWNED(o) (o)
    #define KINCIR_SET_DEALLOC(type, fn) (((PyTypeObject *)(type))->tp_dealloc = (destructor)(fn))
    #define KINCIR_FREE(obj) (Py_TYPE(obj)->tp_free(obj))
    /* The start of Message's object struct as Cython lays it out (_message.pxd declares the
       three object fields first, and Message has no cdef methods, so no vtable pointer comes
       before them); checked at import by _check_layout. */
    typedef struct {
        PyObject_HEAD
        PyObject *payload;
        PyObject *meta;
        PyObject *topic;
    } KincirMessageHead;
    #define KINCIR_PAYLOAD(o) (&((KincirMessageHead *)(o))->payload)
    #define KINCIR_META(o) (&((KincirMessageHead *)(o))->meta)
    #define KINCIR_TOPIC(o) (&((KincirMessageHead *)(o))->topic)
    """
    bint KINCIR_HAS_BUFFER_SLOT(object obj)
    # a Message pointer taken over as a new reference (no INCREF): what _new_message allocates
    Message KINCIR_OWNED(PyObject* obj)
    void KINCIR_SET_DEALLOC(object type, void* fn)
    void KINCIR_FREE(PyObject* obj)
    PyTypeObject* Py_TYPE(PyObject* obj)
    PyObject** KINCIR_PAYLOAD(PyObject* obj)
    PyObject** KINCIR_META(PyObject* obj)
    PyObject** KINCIR_TOPIC(PyObject* obj)
    void* PyObject_Malloc(size_t size)
    PyObject* PyObject_Init(PyObject* obj, PyTypeObject* type)
    bint PyType_HasFeature(PyTypeObject* type, unsigned long feature)
    unsigned long Py_TPFLAGS_HEAPTYPE
    object PyDictProxy_New(object mapping)
    bint PyByteArray_Check(object obj)
    bint PyMemoryView_Check(object obj)
    void PyType_Modified(PyTypeObject* tp)

cdef dict _EMPTY = {}
cdef object _EMPTY_VIEW = MappingProxyType(_EMPTY)

# -- uuid4 generation -------------------------------------------------------------------------

cdef uint64_t _rng[4]


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _next_random() noexcept nogil:
    cdef uint64_t result = _rotl(_rng[1] * 5, 7) * 9
    cdef uint64_t t = _rng[1] << 17
    _rng[2] ^= _rng[0]
    _rng[3] ^= _rng[1]
    _rng[1] ^= _rng[2]
    _rng[0] ^= _rng[3]
    _rng[2] ^= t
    _rng[3] = _rotl(_rng[3], 45)
    return result


def _reseed():
    """Seed the uuid generator from the OS (at import and in a forked child)."""
    cdef bytes seed = os.urandom(32)
    cdef const unsigned char* raw = seed
    cdef int i, j
    for i in range(4):
        _rng[i] = 0
        for j in range(8):
            _rng[i] = (_rng[i] << 8) | raw[i * 8 + j]
    if _rng[0] == 0 and _rng[1] == 0 and _rng[2] == 0 and _rng[3] == 0:
        _rng[0] = 1


_reseed()
os.register_at_fork(after_in_child=_reseed)


cdef inline void _new_id(Message msg) noexcept:
    msg._id_hi = (_next_random() & ~(<uint64_t>0xF000)) | (<uint64_t>0x4000)
    msg._id_lo = (_next_random() & ~(<uint64_t>0xC000000000000000)) | (<uint64_t>0x8000000000000000)


cdef void new_id(uint64_t* hi, uint64_t* lo) noexcept:
    """128 fresh random bits with the uuid4 version and variant bits set."""
    hi[0] = (_next_random() & ~(<uint64_t>0xF000)) | (<uint64_t>0x4000)
    lo[0] = (_next_random() & ~(<uint64_t>0xC000000000000000)) | (<uint64_t>0x8000000000000000)


cdef str _format_uuid(uint64_t hi, uint64_t lo):
    cdef char buf[36]
    cdef const char* digits = b"0123456789abcdef"
    cdef int i, out = 0
    cdef uint64_t word
    for i in range(32):
        if i == 8 or i == 12 or i == 16 or i == 20:
            buf[out] = b'-'
            out += 1
        word = hi if i < 16 else lo
        buf[out] = digits[(word >> (60 - 4 * (i % 16))) & 0xF]
        out += 1
    return PyUnicode_DecodeASCII(buf, 36, NULL)


# -- validation -------------------------------------------------------------------------------

cdef object snapshot_payload(object value):
    """``to_payload`` (``_message.pxd``) past its exact-bytes case: a ``bytearray`` or
    ``memoryview`` becomes ``bytes`` (a snapshot), anything else is kept as it is. Those two are
    the mutable buffers callers refill and publish again; bytes-only releases copied them, and
    code written for that must not see its later writes reach subscribers."""
    # most objects export no buffer: one slot test skips the two subtype walks (a bytearray
    # subclass inherits the buffer slot, and memoryview cannot be subclassed)
    if KINCIR_HAS_BUFFER_SLOT(value) and (PyByteArray_Check(value) or PyMemoryView_Check(value)):
        return bytes(value)
    return value


cdef dict copy_metadata(object metadata):
    """Metadata as a message keeps it: a new dict of exact str keys and values (the shared
    empty one for none); anything else raises TypeError."""
    if metadata is None:
        return _EMPTY
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str to str, not {type(metadata).__name__}")
    cdef dict copied = {}
    for key, value in metadata.items():
        if type(key) is not str or type(value) is not str:
            raise TypeError(
                "metadata keys and values must be str, "
                f"got {type(key).__name__} -> {type(value).__name__} for key {key!r}"
            )
        copied[key] = value
    return copied if copied else _EMPTY


cdef str _short(object payload):
    """A payload for a repr: bytes cut at 32, other objects' reprs cut at 80 characters."""
    if PyBytes_CheckExact(payload):
        if len(<bytes>payload) <= 32:
            return repr(payload)
        return f"{(<bytes>payload)[:32]!r}...({len(<bytes>payload)} bytes)"
    shown = repr(payload)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."


# -- the message type -------------------------------------------------------------------------

@cython.final
@cython.no_gc
cdef class Message:
    """A message: a payload (any object, shared by reference), read-only str->str metadata and
    a uuid4 identifier.

    Messages handed out by a subscriber also carry ``topic`` and ``sequence``, and the metadata
    keys ``_sequence`` (when the broker maintains order) and ``_enqueued_at`` (Unix milliseconds).
    """

    def __init__(self, payload, metadata=None):
        if self._meta is not None:
            raise TypeError("a Message is immutable: build a new one instead of re-initialising")
        self.payload = to_payload(payload)
        self._meta = copy_metadata(metadata)
        _new_id(self)
        self._topic = None

    @classmethod
    def new(cls, payload):
        """Build a message with no metadata (the seed's ``Message::new``)."""
        return Message(payload)

    @property
    def uuid(self):
        """The message's uuid4, kept by every copy the broker delivers."""
        ensure_id(self)
        return _format_uuid(self._id_hi, self._id_lo)

    @property
    def metadata(self):
        """Read-only str->str metadata, with the delivery keys on a delivered message."""
        if self._topic is None:
            return PyDictProxy_New(self._meta) if self._meta else _EMPTY_VIEW
        cdef dict merged = dict(self._meta)
        if self._ordered:
            merged["_sequence"] = str(self._sequence)
        merged["_enqueued_at"] = str(self._enqueued_at)
        return PyDictProxy_New(merged)

    @property
    def topic(self):
        """The topic a delivered message was published to; None before publishing."""
        return self._topic

    @property
    def sequence(self):
        """The per-topic sequence number of a delivered message; None before publishing."""
        return self._sequence if self._topic is not None else None

    @property
    def enqueued_at(self):
        """Unix milliseconds at which a delivered message entered its topic; None before."""
        return self._enqueued_at if self._topic is not None else None

    def with_payload(self, payload):
        """Return a new message with the same uuid and metadata and another payload."""
        ensure_id(self)
        return _new_message(to_payload(payload), self._meta, None, self._id_hi, self._id_lo,
                            0, 0, False)

    def with_metadata(self, key, value):
        """Return a new message with the same uuid and payload and one metadata entry set."""
        if type(key) is not str:
            raise TypeError(f"metadata key must be str, not {type(key).__name__}")
        if type(value) is not str:
            raise TypeError(f"metadata value must be str, not {type(value).__name__}")
        cdef dict meta = dict(self._meta)
        meta[key] = value
        ensure_id(self)
        return _new_message(self.payload, meta, None, self._id_hi, self._id_lo, 0, 0, False)

    __class_getitem__ = classmethod(GenericAlias)  # Message[Order] in annotations

    def __repr__(self):
        shown = _short(self.payload)
        where = "" if self._topic is None else f", topic={self._topic!r}, sequence={self._sequence}"
        return f"Message(uuid={self.uuid!r}, payload={shown}{where})"

    def __reduce__(self):
        ensure_id(self)
        return (
            restore_message,
            (self.payload, self._meta, (<object>self._id_hi << 64) | self._id_lo, self._topic,
             self._sequence, self._enqueued_at, self._ordered),
        )


# -- allocation -------------------------------------------------------------------------------

# The engine builds a Message for every message delivered, so how one is allocated is on every
# hot path. Cython's generated tp_new clears the object and stores None in each object field,
# and the caller then overwrites them: six reference-count writes to the one shared None per
# message, a chain of dependent writes that `perf annotate` showed as most of the time spent
# building a delivered message. _new_message writes every field once instead, and the type's
# dealloc (_dealloc_message) keeps up to _SPARE_MAX freed messages to hand out again (one list
# for the process: the GIL guards it, as the engine does not declare free-threading). Objects
# from Cython's tp_new (``Message(payload, metadata)``, which parses arguments and runs
# __init__) are freed the same way: both allocate with the type's size from the object
# allocator.
cdef enum:
    _SPARE_MAX = 256

cdef PyObject* _spare[_SPARE_MAX]
cdef Py_ssize_t _spares = 0


cdef inline Message _new_message(object payload, dict meta, object topic, uint64_t id_hi,
                                 uint64_t id_lo, int64_t sequence, int64_t enqueued_at,
                                 bint ordered):
    """A Message with every field set, its references taken; no Python code runs."""
    global _spares
    cdef PyObject* raw
    cdef Message msg
    if _spares:
        _spares -= 1
        raw = _spare[_spares]
    else:
        raw = <PyObject*>PyObject_Malloc((<PyTypeObject*>Message).tp_basicsize)
        if raw == NULL:
            raise MemoryError()
    PyObject_Init(raw, <PyTypeObject*>Message)
    # raw stores: the fields hold no reference yet (a spare's were cleared, fresh memory is
    # garbage), so they must not be released the way an assignment would
    Py_INCREF(payload)
    Py_INCREF(meta)
    Py_INCREF(topic)
    KINCIR_PAYLOAD(raw)[0] = <PyObject*>payload
    KINCIR_META(raw)[0] = <PyObject*>meta
    KINCIR_TOPIC(raw)[0] = <PyObject*>topic
    msg = KINCIR_OWNED(raw)
    msg._id_hi = id_hi
    msg._id_lo = id_lo
    msg._sequence = sequence
    msg._enqueued_at = enqueued_at
    msg._ordered = ordered
    return msg


cdef inline void _clear_field(PyObject** field) noexcept:
    cdef PyObject* held = field[0]
    field[0] = NULL
    Py_XDECREF(held)


cdef void _dealloc_message(PyObject* obj) noexcept:
    """The type's tp_dealloc: release the fields, keep the object as a spare when there is
    room. A payload's last reference may run Python code (``__del__``) that builds or frees
    messages; the spares are touched only after it."""
    global _spares
    cdef PyTypeObject* tp = Py_TYPE(obj)
    _clear_field(KINCIR_PAYLOAD(obj))
    _clear_field(KINCIR_META(obj))
    _clear_field(KINCIR_TOPIC(obj))
    if _spares < _SPARE_MAX:
        _spare[_spares] = obj
        _spares += 1
    else:
        KINCIR_FREE(obj)
    if PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE):
        Py_DECREF(<object>tp)


def _check_layout():
    """Refuse to import when KincirMessageHead does not match Message's fields."""
    cdef Message probe = Message.__new__(Message)
    probe.payload = object()
    probe._meta = {}
    probe._topic = "probe"
    cdef PyObject* raw = <PyObject*>probe
    if (KINCIR_PAYLOAD(raw)[0] != <PyObject*>probe.payload
            or KINCIR_META(raw)[0] != <PyObject*>probe._meta
            or KINCIR_TOPIC(raw)[0] != <PyObject*>probe._topic):
        raise ImportError("kincir_core._message: Message's fields are not laid out as expected")


_check_layout()
KINCIR_SET_DEALLOC(Message, <void*>_dealloc_message)


cdef Message delivered_copy(PyObject* payload, PyObject* meta, uint64_t id_hi, uint64_t id_lo,
                            str topic, int64_t sequence, int64_t enqueued_at, bint ordered):
    """The message readers receive, built from a topic log slot. Allocates only a Message (no
    GC tracking, no Python code runs), so the log may call it under its lock. ``id_hi`` and
    ``id_lo`` both 0: the uuid is drawn when first read."""
    return _new_message(<object>payload, <dict>meta, topic, id_hi, id_lo, sequence, enqueued_at,
                        ordered)


# Public name: the type is re-exported as kincir.Message, and its repr, pickles and tracebacks
# should say so.
cdef const char* _PUBLIC_NAME = "kincir.Message"
(<PyTypeObject*>Message).tp_name = _PUBLIC_NAME
PyType_Modified(<PyTypeObject*>Message)


# ``Message(payload)``, one per send in a typical loop, skips argument parsing: the type's
# vectorcall handles the one-positional-argument call itself and passes anything else on to the
# vectorcall Cython generated (which parses arguments and runs __init__).
ctypedef object (*_vectorcall)(PyObject* callable, PyObject** args, size_t nargsf,
                               PyObject* kwnames)

cdef extern from "Python.h":
    """
    #define KINCIR_GET_VECTORCALL(type) ((void *)((PyTypeObject *)(type))->tp_vectorcall)
    #define KINCIR_SET_VECTORCALL(type, fn) \
        (((PyTypeObject *)(type))->tp_vectorcall = (vectorcallfunc)(fn))
    """
    void* KINCIR_GET_VECTORCALL(object type)
    void KINCIR_SET_VECTORCALL(object type, void* fn)
    Py_ssize_t PyVectorcall_NARGS(size_t nargsf)

cdef _vectorcall _generated_vectorcall = <_vectorcall>KINCIR_GET_VECTORCALL(Message)


cdef object _message_vectorcall(PyObject* callable, PyObject** args, size_t nargsf,
                                PyObject* kwnames):
    cdef Message msg
    if PyVectorcall_NARGS(nargsf) != 1 or kwnames != NULL:
        return _generated_vectorcall(callable, args, nargsf, kwnames)
    msg = _new_message(to_payload(<object>args[0]), _EMPTY, None, 0, 0, 0, 0, False)
    _new_id(msg)
    return msg


if _generated_vectorcall != NULL:
    KINCIR_SET_VECTORCALL(Message, <void*>_message_vectorcall)


def restore_message(payload, meta, ident, topic, sequence, enqueued_at, ordered):
    """Rebuild a message from its pickled state."""
    cdef Message msg = Message.__new__(Message)
    msg.payload = to_payload(payload)
    msg._meta = copy_metadata(meta)
    msg._id_hi = (ident >> 64) & 0xFFFFFFFFFFFFFFFF
    msg._id_lo = ident & 0xFFFFFFFFFFFFFFFF
    if topic is not None and type(topic) is not str:
        raise TypeError("topic must be str or None")
    msg._topic = topic
    msg._sequence = sequence
    msg._enqueued_at = enqueued_at
    msg._ordered = ordered
    return msg


cdef int check_batch(object items) except -1:
    """Refuse anything but a list or tuple of messages."""
    if type(items) is not list and type(items) is not tuple:
        raise TypeError(
            f"messages must be a list of Message objects or payloads, "
            f"not {type(items).__name__}"
        )
    return 0
