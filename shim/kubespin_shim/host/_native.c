/*
 * Native host functions for the hottest WASI imports: the monotonic clock and random u64s.
 *
 * Why C: a JS guest (StarlingMonkey) reads wasi:clocks/monotonic-clock.now about 20 times per
 * request. Through a Python callback each read costs ~9K instructions (ctypes converts seven
 * arguments, takes the GIL back from the guest's thread, runs a Python frame) and, with several
 * requests in flight, each GIL take is a chance to be switched out. These functions are wasmtime
 * component host callbacks (wasmtime_component_func_callback_t) that never touch Python: they
 * are registered with the linker by address (host/binding.py) and run inside the guest's call.
 *
 * The module also has two Python-callable helpers for the resource handles that cross on almost
 * every host call (take_rep, lower_own): each does in one call what took three ctypes calls.
 *
 * They are an optional accelerator: the package builds without them (setuptools `optional`), and
 * host/binding.py falls back to the Python implementations, which behave the same, when this
 * module is missing or KUBESPIN_NATIVE_HOST=0.
 *
 * The module is built without wasmtime's headers. What it relies on is checked from Python before
 * any function is registered (host/native.py): a component value is a 1-byte kind followed by its
 * payload at offset 8 (wasmtime_component_val_t), the kind number of u64 is passed in, and every
 * import bound to one of these functions has been checked to take no parameters and return one u64.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>

typedef struct {
    uint8_t kind;
    uint64_t u64; /* the payload union starts at offset 8 */
} val_u64;

_Static_assert(offsetof(val_u64, u64) == 8, "component value payload offset");

typedef struct {
    uint8_t kind;
    void *ptr; /* option / resource payload: a pointer at offset 8 */
} val_ptr;

_Static_assert(offsetof(val_ptr, ptr) == 8, "component value payload offset");

typedef void *(*error_new_fn)(const char *message);
typedef void *(*any_to_host_fn)(void *context, const void *any, void **host_out);
typedef uint32_t (*host_rep_fn)(const void *host);
typedef void (*host_delete_fn)(void *host);
typedef void *(*host_new_fn)(_Bool owned, uint32_t rep, uint32_t type);
typedef void *(*host_to_any_fn)(void *context, const void *host, void **any_out);

/* All set by configure(): wasmtime's C API entry points and value kinds. */
static uint8_t kind_u64 = 0xff;
static uint8_t kind_resource = 0xff;
static error_new_fn error_new = NULL;
static any_to_host_fn any_to_host = NULL;
static host_rep_fn host_rep = NULL;
static host_delete_fn host_delete = NULL;
static host_new_fn host_new = NULL;
static host_to_any_fn host_to_any = NULL;

static void *fail(const char *message) {
    /* A wasmtime_error_t* becomes a trap in the guest's call; NULL-safe if never configured. */
    return error_new ? error_new(message) : NULL;
}

static inline void *put_u64(void *results, size_t nresults, uint64_t value) {
    if (nresults != 1 || kind_u64 == 0xff) {
        return fail("kubespin native host function: unexpected signature");
    }
    val_u64 *out = (val_u64 *)results;
    out->kind = kind_u64;
    out->u64 = value;
    return NULL;
}

/* wasi:clocks/monotonic-clock.now: nanoseconds of CLOCK_MONOTONIC (what Python's time.monotonic_ns reads). */
static void *monotonic_now(void *env, void *context, const void *ty, void *args, size_t nargs, void *results,
                           size_t nresults) {
    (void)env, (void)context, (void)ty, (void)args, (void)nargs;
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return fail("monotonic-clock.now: clock_gettime failed");
    }
    return put_u64(results, nresults, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}

/* wasi:clocks/monotonic-clock.resolution: the clock's resolution in nanoseconds. */
static void *monotonic_resolution(void *env, void *context, const void *ty, void *args, size_t nargs,
                                  void *results, size_t nresults) {
    (void)env, (void)context, (void)ty, (void)args, (void)nargs;
    struct timespec ts;
    if (clock_getres(CLOCK_MONOTONIC, &ts) != 0) {
        return fail("monotonic-clock.resolution: clock_getres failed");
    }
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return put_u64(results, nresults, ns ? ns : 1);
}

static int fill_random(uint64_t *value) {
    size_t got = 0;
    unsigned char *p = (unsigned char *)value;
    while (got < sizeof *value) {
        ssize_t n = getrandom(p + got, sizeof *value - got, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

/* wasi:random/random.get-random-u64 (and insecure.get-insecure-random-u64): the kernel's CSPRNG,
 * as os.urandom in the Python implementation. */
static void *random_u64(void *env, void *context, const void *ty, void *args, size_t nargs, void *results,
                        size_t nresults) {
    (void)env, (void)context, (void)ty, (void)args, (void)nargs;
    uint64_t value;
    if (fill_random(&value) != 0) {
        return fail("random.get-random-u64: getrandom failed");
    }
    return put_u64(results, nresults, value);
}

static PyObject *configure(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a_error_new, a_any_to_host, a_host_rep, a_host_delete, a_host_new, a_host_to_any;
    unsigned int k_u64, k_resource;
    if (!PyArg_ParseTuple(args, "IIKKKKKK", &k_u64, &k_resource, &a_error_new, &a_any_to_host, &a_host_rep,
                          &a_host_delete, &a_host_new, &a_host_to_any)) {
        return NULL;
    }
    if (k_u64 > 0xfe || k_resource > 0xfe || !a_error_new || !a_any_to_host || !a_host_rep || !a_host_delete ||
        !a_host_new || !a_host_to_any) {
        PyErr_SetString(PyExc_ValueError, "configure(): a kind out of range or a NULL function address");
        return NULL;
    }
    kind_u64 = (uint8_t)k_u64;
    kind_resource = (uint8_t)k_resource;
    error_new = (error_new_fn)(uintptr_t)a_error_new;
    any_to_host = (any_to_host_fn)(uintptr_t)a_any_to_host;
    host_rep = (host_rep_fn)(uintptr_t)a_host_rep;
    host_delete = (host_delete_fn)(uintptr_t)a_host_delete;
    host_new = (host_new_fn)(uintptr_t)a_host_new;
    host_to_any = (host_to_any_fn)(uintptr_t)a_host_to_any;
    Py_RETURN_NONE;
}

static int configured(void) {
    if (host_to_any == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "kubespin_shim.host._native: configure() was not called");
        return 0;
    }
    return 1;
}

static int parse_addresses(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, void **out) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "expected %zd arguments, got %zd", want, nargs);
        return 0;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = PyLong_AsVoidPtr(args[i]);
        if (out[i] == NULL && PyErr_Occurred()) {
            return 0;
        }
    }
    return 1;
}

/* take_rep(context, val) -> rep (>= 0), or minus the wasmtime_error_t* address when wasmtime refused
 * (user-space addresses fit in 63 bits on the 64-bit platforms wasmtime supports).
 * `val` holds a resource handle the guest passed in (own or borrow). Converting it to a host
 * resource releases a borrow (wasmtime traps if one is left) and takes an own out of the guest's
 * table, as values.py's Python version does. */
static PyObject *take_rep(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    void *a[2];
    if (!configured() || !parse_addresses(args, nargs, 2, a)) {
        return NULL;
    }
    void *host = NULL;
    void *err = any_to_host(a[0], ((val_ptr *)a[1])->ptr, &host);
    if (err != NULL) {
        return PyLong_FromLongLong(-(long long)(uintptr_t)err);
    }
    uint32_t rep = host_rep(host);
    host_delete(host);
    return PyLong_FromUnsignedLong(rep);
}

/* lower_own(context, rep, type, val) -> 0, or the wasmtime_error_t* address.
 * Writes an own handle of host resource (rep, type) into `val`. */
static PyObject *lower_own(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (!configured()) {
        return NULL;
    }
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "lower_own expects 4 arguments, got %zd", nargs);
        return NULL;
    }
    void *context = PyLong_AsVoidPtr(args[0]);
    unsigned long rep = PyLong_AsUnsignedLong(args[1]);
    unsigned long type = PyLong_AsUnsignedLong(args[2]);
    void *val = PyLong_AsVoidPtr(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (rep > UINT32_MAX || type > UINT32_MAX || val == NULL) {
        PyErr_SetString(PyExc_ValueError, "lower_own: rep or type out of range, or a NULL value");
        return NULL;
    }
    void *host = host_new(1, (uint32_t)rep, (uint32_t)type);
    void *any = NULL;
    void *err = host_to_any(context, host, &any);
    host_delete(host);
    if (err != NULL) {
        return PyLong_FromVoidPtr(err);
    }
    val_ptr *out = (val_ptr *)val;
    out->ptr = any;
    out->kind = kind_resource;
    return PyLong_FromLong(0);
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(kind_u64, kind_resource, error_new, any_to_host, host_rep, host_delete, host_new, host_to_any)"},
    {"take_rep", (PyCFunction)(void (*)(void))take_rep, METH_FASTCALL,
     "take_rep(context, val) -> rep, or -(error address)"},
    {"lower_own", (PyCFunction)(void (*)(void))lower_own, METH_FASTCALL,
     "lower_own(context, rep, type, val) -> 0 | error address"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kubespin_shim.host._native",
    "Native wasmtime host callbacks (monotonic clock, random u64) as addresses, and resource helpers.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    struct {
        const char *name;
        void *fn;
    } exported[] = {
        {"monotonic_now", (void *)monotonic_now},
        {"monotonic_resolution", (void *)monotonic_resolution},
        {"random_u64", (void *)random_u64},
    };
    for (size_t i = 0; i < sizeof exported / sizeof exported[0]; i++) {
        if (PyModule_AddObject(m, exported[i].name, PyLong_FromVoidPtr(exported[i].fn)) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(m, "PAYLOAD_OFFSET", (long)offsetof(val_u64, u64)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
