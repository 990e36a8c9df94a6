/*
 * The shim's host-call path in C: an optional accelerator for what host/binding.py, host/values.py
 * and runtime.py do in Python. Five parts:
 *
 * 1. Native host functions for the hottest WASI imports: the monotonic clock and random u64s. A JS
 *    guest (StarlingMonkey) reads wasi:clocks/monotonic-clock.now about 20 times per request; these
 *    are wasmtime component host callbacks (wasmtime_component_func_callback_t) that never touch
 *    Python, registered with the linker by address (host/binding.py).
 * 2. The entry point of every *Python* host function (host_call) and resource destructor
 *    (resource_drop): wasmtime calls them with the function's Python entry object as `env`; they take
 *    the GIL, pass the request's CallContext (set per thread by set_context) and the argument and
 *    result addresses to the entry's compiled invoker, and turn an exception into a trap through the
 *    entry's own `failed` method: what binding.py's ctypes trampoline does, without libffi's
 *    closure, seven ctypes argument conversions and a Python frame per call.
 * 3. lift/lower: component values to and from Python (resource handles included), walking a plan
 *    values.py compiles once per WIT type, instead of a tree of Python closures and ctypes overlays
 *    (several Python calls per value, each hundreds of nanoseconds).
 * 4. Periodic threads that never take the GIL: the epoch ticker (start_ticker), which advances the
 *    engine's epoch, and the HTTP worker pool's watch (start_watch), which notices a stalled pool
 *    (http/workers.py). Python threads doing the same took the GIL every beat, and on a busy CPU
 *    each beat cost the thread running requests a forced GIL hand-over and a few context switches
 *    (docs/performance.md).
 * 5. run_guest: one request's store, instance, call and teardown in one call (runtime.py made ten
 *    ctypes calls). While it runs, the request's store and resource table are known to the host
 *    calls on its thread (`req`), so a lift or lower looks nothing up, own handles are pushed into
 *    the table without a Python frame, and a dropped handle whose object has nothing to close is
 *    forgotten without one.
 *
 * Why C, and written here: no library provides wasmtime component host callbacks or value
 * conversions for Python; wasmtime-py's own conversions reflect on the type at every call. Measured
 * (bench/request_instructions.py, docs/performance.md): a js-hello request costs 1.65 M user-space
 * instructions with everything in Python and about 1.1 M with this module.
 *
 * The package builds without it (setuptools `optional`), and the Python implementations, which
 * behave the same and are tested the same (tests/host_paths.py), run when this module is missing
 * or KUBESPIN_NATIVE_HOST=0.
 *
 * The module is built without wasmtime's headers. What it relies on comes from Python, which takes
 * it from wasmtime-py's declarations after host/capi.py has checked them against its overlays: the
 * value kinds, the offsets of the value layout (configure_values), the C API's function addresses;
 * and every import bound to a part-1 function has been checked to take no parameters and return one
 * u64 (host/native.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint8_t kind;
    uint64_t u64; /* the payload union starts at offset 8 */
} val_u64;

_Static_assert(offsetof(val_u64, u64) == 8, "component value payload offset");

typedef void *(*error_new_fn)(const char *message);
typedef void *(*any_to_host_fn)(void *context, const void *any, void **host_out);
typedef uint32_t (*host_rep_fn)(const void *host);
typedef void (*host_delete_fn)(void *host);
typedef void *(*host_new_fn)(_Bool owned, uint32_t rep, uint32_t type);
typedef void *(*host_to_any_fn)(void *context, const void *host, void **any_out);

/* All set by configure(): wasmtime's C API entry points and value kinds. */
static uint8_t kind_u64 = 0xff;
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
    unsigned int k_u64;
    if (!PyArg_ParseTuple(args, "IKKKKKK", &k_u64, &a_error_new, &a_any_to_host, &a_host_rep, &a_host_delete,
                          &a_host_new, &a_host_to_any)) {
        return NULL;
    }
    if (k_u64 > 0xfe || !a_error_new || !a_any_to_host || !a_host_rep || !a_host_delete || !a_host_new ||
        !a_host_to_any) {
        PyErr_SetString(PyExc_ValueError, "configure(): a kind out of range or a NULL function address");
        return NULL;
    }
    kind_u64 = (uint8_t)k_u64;
    error_new = (error_new_fn)(uintptr_t)a_error_new;
    any_to_host = (any_to_host_fn)(uintptr_t)a_any_to_host;
    host_rep = (host_rep_fn)(uintptr_t)a_host_rep;
    host_delete = (host_delete_fn)(uintptr_t)a_host_delete;
    host_new = (host_new_fn)(uintptr_t)a_host_new;
    host_to_any = (host_to_any_fn)(uintptr_t)a_host_to_any;
    Py_RETURN_NONE;
}

/* ---- the entry point of Python host functions ---------------------------------------------------- */

/* The request's CallContext on this thread (a strong reference), set by run_guest for the request it
 * runs, or by binding.set_current_context (the ctypes path). Host calls run on the thread that called
 * into the guest, so a thread-local is exact. */
static _Thread_local PyObject *current_ctx = NULL;
/* HostResource.close, the no-op a resource without its own close() inherits (configure_values) */
static PyObject *base_close = NULL;

/* Resources: the request's store and resource table (its items dict and its handle counter).
 *
 * run_guest knows them for the whole request and leaves them in `req` (per thread) for the host
 * calls it runs; a lift or lower for that request's context takes them from there. Anything else
 * (the ctypes path's linker, a test calling lift/lower directly) looks them up on the context, once
 * per lift or lower. */
typedef struct {
    PyObject *ctx;   /* the CallContext (a borrowed reference) */
    void *store;     /* ctx.store_ptr */
    PyObject *table; /* ctx.table */
    PyObject *items; /* ctx.table._items (a dict) */
    PyObject *counter; /* ctx.table._counter (an iterator of fresh handles) */
    int borrowed;    /* table, items and counter are req's references, not ours */
} res_state;

static _Thread_local res_state req; /* set by run_guest for the request it runs on this thread */
static void res_release(res_state *rs);
static PyObject *lift_val(PyObject *plan, const uint8_t *v, res_state *rs);
static int lower_val(PyObject *plan, PyObject *value, uint8_t *v, res_state *rs);
static size_t val_size;
static PyObject *str_invoke, *str_compile, *str_failed, *str_store_ptr, *str_drop, *str_close, *str_native;

static PyObject *set_context(PyObject *self, PyObject *ctx) {
    (void)self;
    PyObject *old = current_ctx;
    if (ctx == Py_None) {
        current_ctx = NULL;
    } else {
        Py_INCREF(ctx);
        current_ctx = ctx;
    }
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* The pending exception as a trap: entry.failed(ctx, exc) records it and returns a wasmtime_error_t*
 * address with the message; if even that fails, a generic trap. Called with the GIL held. */
static void *trap_from_exception(PyObject *entry, PyObject *ctx) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyObject *addr = PyObject_CallMethodObjArgs(entry, str_failed, ctx, value ? value : Py_None, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    void *err = NULL;
    if (addr != NULL) {
        err = PyLong_AsVoidPtr(addr);
        Py_DECREF(addr);
    }
    if (err == NULL) {
        PyErr_Clear();
        err = fail("kubespin host function failed, and reporting the failure failed too");
    }
    return err;
}

#define NATIVE_MAX_ARGS 16

/* A compiled host function called straight from here: entry.native is (target, method, needs_ctx,
 * lift plans, lower plan | None), set by binding._compile once the function's type is known. The
 * arguments are lifted and the result lowered by their plans, and the Python function (or, for a
 * resource method, `method` of the lifted resource) is called directly: what the entry's generated
 * `invoke` does, without its frame, three address ints and the calls into lift/lower. Returns the
 * Python call's success (0) or -1 with an exception set. */
static int call_native(PyObject *native, PyObject *ctx, void *args, void *results) {
    PyObject *target = PyTuple_GET_ITEM(native, 0), *method = PyTuple_GET_ITEM(native, 1);
    int needs_ctx = PyTuple_GET_ITEM(native, 2) == Py_True;
    PyObject *lifts = PyTuple_GET_ITEM(native, 3), *lower_plan = PyTuple_GET_ITEM(native, 4);
    Py_ssize_t n = PyTuple_GET_SIZE(lifts);
    if (n > NATIVE_MAX_ARGS) {
        PyErr_SetString(PyExc_RuntimeError, "host function with too many parameters for the native call");
        return -1;
    }
    PyObject *argv[NATIVE_MAX_ARGS + 1];
    argv[0] = ctx;
    res_state rs = {ctx, NULL, NULL, NULL, NULL, 0};
    Py_ssize_t lifted = 0;
    int rc = -1;
    for (; lifted < n; lifted++) {
        argv[1 + lifted] = lift_val(PyTuple_GET_ITEM(lifts, lifted), (const uint8_t *)args + lifted * val_size, &rs);
        if (argv[1 + lifted] == NULL) {
            goto out;
        }
    }
    PyObject *r;
    if (method != Py_None) { /* argv[1] is the resource: obj.method(*rest) */
        r = PyObject_VectorcallMethod(method, argv + 1, (size_t)n, NULL);
    } else if (needs_ctx) {
        r = PyObject_Vectorcall(target, argv, (size_t)n + 1, NULL);
    } else {
        r = PyObject_Vectorcall(target, argv + 1, (size_t)n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    if (r != NULL) {
        rc = lower_plan == Py_None ? 0 : lower_val(lower_plan, r, (uint8_t *)results, &rs);
        Py_DECREF(r);
    }
out:
    for (Py_ssize_t i = 0; i < lifted; i++) {
        Py_DECREF(argv[1 + i]);
    }
    res_release(&rs);
    return rc;
}

/* wasmtime_component_func_callback_t for every Python host function. `env` is its binding._Entry,
 * which lives as long as the process (binding._ENTRIES keeps it). */
static void *host_call(void *env, void *context, const void *ty, void *args, size_t nargs, void *results,
                       size_t nresults) {
    (void)nargs, (void)nresults;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *entry = (PyObject *)env;
    PyObject *ctx = current_ctx;
    void *err = NULL;
    if (ctx == NULL) {
        err = fail("host function called outside a request (no call context on this thread)");
        goto out;
    }
    Py_INCREF(ctx);
    if (ctx == req.ctx && context == req.store) { /* run_guest's request: its store is ctx.store_ptr */
        PyObject *native = PyObject_GetAttr(entry, str_native);
        if (native != NULL && PyTuple_CheckExact(native) && PyTuple_GET_SIZE(native) == 5) {
            if (call_native(native, ctx, args, results) < 0) {
                err = trap_from_exception(entry, ctx);
            }
            Py_DECREF(native);
            Py_DECREF(ctx);
            goto out;
        }
        if (native == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(native);
    }
    PyObject *invoke = PyObject_GetAttr(entry, str_invoke);
    if (invoke == Py_None) {
        Py_DECREF(invoke);
        PyObject *type_address = PyLong_FromVoidPtr((void *)ty);
        invoke = type_address ? PyObject_CallMethodOneArg(entry, str_compile, type_address) : NULL;
        Py_XDECREF(type_address);
    }
    /* ctx.store_ptr is already `context` when run_guest runs this request (req); otherwise set it */
    int store_set = ctx == req.ctx && context == req.store;
    PyObject *store = invoke && !store_set ? PyLong_FromVoidPtr(context) : NULL;
    PyObject *argv[3] = {ctx, invoke && (store_set || store) ? PyLong_FromVoidPtr(args) : NULL, NULL};
    argv[2] = argv[1] ? PyLong_FromVoidPtr(results) : NULL;
    PyObject *r = NULL;
    if (argv[2] != NULL && (store_set || PyObject_SetAttr(ctx, str_store_ptr, store) == 0)) {
        r = PyObject_Vectorcall(invoke, argv, 3, NULL);
    }
    if (r == NULL) {
        err = trap_from_exception(entry, ctx);
    }
    Py_XDECREF(r);
    Py_XDECREF(argv[2]);
    Py_XDECREF(argv[1]);
    Py_XDECREF(store);
    Py_XDECREF(invoke);
    Py_DECREF(ctx);
out:
    PyGILState_Release(gil);
    return err;
}

/* The object behind `rep` in the request run_guest runs on this thread, when it can simply be
 * forgotten: its type keeps HostResource's no-op close(). 1: forgotten; 0: not so (run env.drop);
 * -1: an error is set. */
static int forget_plain_resource(PyObject *ctx, uint32_t rep) {
    if (ctx != req.ctx || req.items == NULL || base_close == NULL) {
        return 0;
    }
    PyObject *key = PyLong_FromUnsignedLong(rep);
    if (key == NULL) {
        return -1;
    }
    int done = 0;
    PyObject *obj = PyDict_GetItemWithError(req.items, key); /* borrowed */
    if (obj != NULL) {
        PyObject *close = PyObject_GetAttr((PyObject *)Py_TYPE(obj), str_close);
        if (close == NULL) {
            done = -1;
        } else {
            done = close == base_close ? (PyDict_DelItem(req.items, key) < 0 ? -1 : 1) : 0;
            Py_DECREF(close);
        }
    } else if (PyErr_Occurred()) {
        done = -1;
    }
    Py_DECREF(key);
    return done;
}

/* wasmtime_component_resource_destructor_t for every host resource type: the guest dropped an own
 * handle. `env` is an object whose drop(ctx, rep) closes what the handle stood for (binding._Drop). */
static void *resource_drop(void *env, void *context, uint32_t rep) {
    (void)context;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *ctx = current_ctx;
    void *err = NULL;
    int forgotten = ctx != NULL ? forget_plain_resource(ctx, rep) : 0;
    if (forgotten < 0) {
        PyErr_Clear(); /* leave it to env.drop, which reports what goes wrong */
        forgotten = 0;
    }
    if (ctx != NULL && !forgotten) {
        Py_INCREF(ctx);
        PyObject *rep_obj = PyLong_FromUnsignedLong(rep);
        PyObject *r = rep_obj ? PyObject_CallMethodObjArgs((PyObject *)env, str_drop, ctx, rep_obj, NULL) : NULL;
        if (r == NULL) {
            err = trap_from_exception((PyObject *)env, ctx);
        } else if (r != Py_None) {
            err = PyLong_AsVoidPtr(r); /* the object's close() failed: drop() made the trap */
            if (err == NULL) {
                PyErr_Clear();
            }
        }
        Py_XDECREF(r);
        Py_XDECREF(rep_obj);
        Py_DECREF(ctx);
    }
    PyGILState_Release(gil);
    return err;
}

/* ---- component values: lift (guest -> Python) and lower (Python -> guest) by a compiled plan ------------ */
/*
 * values.py compiles each WIT type once into a *plan*, a tuple tree (code, a, b) with the codes of
 * PLAN_CODES below, and lifts/lowers values with it through these two functions instead of a chain of
 * Python closures and ctypes overlays. The Python representations are exactly values.py's (its
 * docstring lists them); so are the rules: a lower writes the payload first and the kind byte last.
 * Layout numbers and value kinds come from Python (configure_values), which takes them from
 * wasmtime-py's declarations after capi.py has checked them.
 */
enum {
    PL_BOOL, PL_S8, PL_U8, PL_S16, PL_U16, PL_S32, PL_U32, PL_S64, PL_U64, PL_F32, PL_F64, PL_CHAR,
    PL_STRING, PL_BYTES, PL_LIST, PL_RECORD, PL_TUPLE, PL_VARIANT, PL_ENUM, PL_OPTION, PL_RESULT, PL_FLAGS,
    PL_BORROW, PL_OWN, PL_COUNT
};
static const char *const plan_names[PL_COUNT] = {
    "bool", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64", "f32", "f64", "char", "string", "bytes",
    "list", "record", "tuple", "variant", "enum", "option", "result", "flags", "borrow", "own",
};
/* value kinds, in this order: the 11 scalars (bool .. f64), then char, string, list, record, tuple,
 * variant, enum, option, result, flags, resource */
enum { K_CHAR_I = 11, K_STRING_I, K_LIST_I, K_RECORD_I, K_TUPLE_I, K_VARIANT_I, K_ENUM_I, K_OPTION_I,
       K_RESULT_I, K_FLAGS_I, K_RESOURCE_I, K_COUNT };
static uint8_t kinds[K_COUNT];
static size_t payload, entry_size, entry_val, name_size, name_size_off, name_data_off, vec_size_off, vec_data_off, variant_val_off,
    result_ok_off, result_val_off, ptr_off;
#define VAL_MAX 64
typedef void (*vec_new_fn)(void *out, size_t size, const void *data);
typedef void (*new_uninit_fn)(void *out, size_t size);
typedef void *(*val_new_fn)(void *val);
static vec_new_fn byte_vec_new = NULL;
static new_uninit_fn vallist_new_uninit, valrecord_new_uninit, valtuple_new_uninit, valflags_new_uninit;
static val_new_fn val_new = NULL;
static PyObject *ok_type, *err_type, *variant_type, *host_trap, *raise_error; /* strong refs */
static PyObject *str_table, *str_items, *str_counter, *str_resource_id, *str_tag, *str_value;

static inline size_t rd_size(const uint8_t *p) { size_t v; memcpy(&v, p, sizeof v); return v; }
static inline void *rd_ptr(const uint8_t *p) { void *v; memcpy(&v, p, sizeof v); return v; }
static inline void wr_ptr(uint8_t *p, void *v) { memcpy(p, &v, sizeof v); }

static PyObject *configure_values(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *layout, *kind_list, *fns, *classes;
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyTuple_Type, &layout, &PyTuple_Type, &kind_list, &PyTuple_Type, &fns,
                          &PyTuple_Type, &classes)) {
        return NULL;
    }
    size_t *slots[] = {&val_size, &payload, &entry_size, &entry_val, &name_size, &name_size_off, &name_data_off, &vec_size_off, &vec_data_off,
                       &variant_val_off, &result_ok_off, &result_val_off, &ptr_off};
    size_t nslots = sizeof slots / sizeof slots[0];
    if (PyTuple_GET_SIZE(layout) != (Py_ssize_t)nslots || PyTuple_GET_SIZE(kind_list) != K_COUNT ||
        PyTuple_GET_SIZE(fns) != 6 || PyTuple_GET_SIZE(classes) != 6) {
        PyErr_SetString(PyExc_ValueError, "configure_values(): wrong number of layout numbers, kinds, functions or classes");
        return NULL;
    }
    for (size_t i = 0; i < nslots; i++) {
        *slots[i] = PyLong_AsSize_t(PyTuple_GET_ITEM(layout, i));
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    if (val_size > VAL_MAX || payload + 3 * sizeof(void *) > val_size || entry_val + val_size > entry_size) {
        PyErr_SetString(PyExc_ValueError, "configure_values(): a value layout this module cannot hold");
        return NULL;
    }
    for (int i = 0; i < K_COUNT; i++) {
        unsigned long k = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(kind_list, i));
        if (PyErr_Occurred() || k > 0xfe) {
            PyErr_SetString(PyExc_ValueError, "configure_values(): a value kind out of range");
            return NULL;
        }
        kinds[i] = (uint8_t)k;
    }
    void *f[6];
    for (int i = 0; i < 6; i++) {
        f[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(fns, i));
        if (f[i] == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "configure_values(): a NULL function address");
            }
            return NULL;
        }
    }
    byte_vec_new = (vec_new_fn)f[0];
    vallist_new_uninit = (new_uninit_fn)f[1];
    valrecord_new_uninit = (new_uninit_fn)f[2];
    valtuple_new_uninit = (new_uninit_fn)f[3];
    valflags_new_uninit = (new_uninit_fn)f[4];
    val_new = (val_new_fn)f[5];
    PyObject **cls[] = {&ok_type, &err_type, &variant_type, &host_trap, &raise_error, &base_close};
    for (int i = 0; i < 6; i++) {
        PyObject *o = PyTuple_GET_ITEM(classes, i);
        Py_INCREF(o);
        Py_XSETREF(*cls[i], o);
    }
    Py_RETURN_NONE;
}

static int values_configured(void) {
    if (val_new == NULL || host_to_any == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "kubespin_shim.host._native: configure_values() was not called");
        return 0;
    }
    return 1;
}

static int plan_parts(PyObject *plan, long *code, PyObject **a, PyObject **b) {
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 3) {
        PyErr_SetString(PyExc_TypeError, "a value plan is a (code, a, b) tuple");
        return -1;
    }
    *code = PyLong_AsLong(PyTuple_GET_ITEM(plan, 0));
    if (*code < 0 || *code >= PL_COUNT) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "unknown value plan code");
        }
        return -1;
    }
    *a = PyTuple_GET_ITEM(plan, 1);
    *b = PyTuple_GET_ITEM(plan, 2);
    return 0;
}


static int res_lookup(res_state *rs) {
    PyObject *store = PyObject_GetAttr(rs->ctx, str_store_ptr);
    if (store == NULL) {
        return -1;
    }
    rs->store = store == Py_None ? NULL : PyLong_AsVoidPtr(store);
    Py_DECREF(store);
    if (rs->store == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(host_trap, "a resource crossed outside a request (no store)");
        }
        return -1;
    }
    rs->table = PyObject_GetAttr(rs->ctx, str_table);
    if (rs->table == NULL) {
        return -1;
    }
    rs->items = PyObject_GetAttr(rs->table, str_items);
    if (rs->items == NULL || !PyDict_Check(rs->items)) {
        if (rs->items != NULL) {
            PyErr_SetString(PyExc_TypeError, "the resource table's items are not a dict");
        }
        return -1;
    }
    rs->counter = PyObject_GetAttr(rs->table, str_counter);
    if (rs->counter == NULL || !PyIter_Check(rs->counter)) {
        if (rs->counter != NULL) {
            PyErr_SetString(PyExc_TypeError, "the resource table's counter is not an iterator");
        }
        return -1;
    }
    return 0;
}

static int res_ready(res_state *rs) {
    if (rs->table != NULL) {
        return 0;
    }
    if (rs->ctx == req.ctx && req.table != NULL) {
        rs->store = req.store;
        rs->table = req.table;
        rs->items = req.items;
        rs->counter = req.counter;
        rs->borrowed = 1;
        return 0;
    }
    return res_lookup(rs);
}

static void res_release(res_state *rs) {
    if (!rs->borrowed) {
        Py_XDECREF(rs->counter);
        Py_XDECREF(rs->items);
        Py_XDECREF(rs->table);
    }
}

static PyObject *wasmtime_error(void *err) {
    PyObject *addr = PyLong_FromVoidPtr(err);
    if (addr != NULL) {
        PyObject *r = PyObject_CallOneArg(raise_error, addr); /* raises; returns NULL */
        Py_XDECREF(r);
        Py_DECREF(addr);
    }
    if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_RuntimeError, "wasmtime refused a resource handle");
    }
    return NULL;
}

static PyObject *lift_resource(const uint8_t *v, res_state *rs, int own) {
    if (res_ready(rs) < 0) {
        return NULL;
    }
    void *host = NULL;
    void *err = any_to_host(rs->store, rd_ptr(v + ptr_off), &host);
    if (err != NULL) {
        return wasmtime_error(err);
    }
    uint32_t rep = host_rep(host);
    host_delete(host);
    PyObject *key = PyLong_FromUnsignedLong(rep);
    if (key == NULL) {
        return NULL;
    }
    PyObject *obj = PyDict_GetItemWithError(rs->items, key);
    if (obj == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(host_trap, "unknown resource handle %u", (unsigned)rep);
        }
        Py_DECREF(key);
        return NULL;
    }
    Py_INCREF(obj);
    if (own && PyDict_DelItem(rs->items, key) < 0) {
        Py_DECREF(obj);
        obj = NULL;
    }
    Py_DECREF(key);
    return obj;
}

/* A (size, data) name vector at `vec` (a wasm_name_t or a value payload) looked up in `by_name`. */
static PyObject *lookup_name(PyObject *by_name, size_t size, const char *data, const char *what) {
    PyObject *key = PyBytes_FromStringAndSize(data, (Py_ssize_t)size);
    if (key == NULL) {
        return NULL;
    }
    PyObject *found = PyDict_GetItemWithError(by_name, key);
    if (found == NULL && !PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "the guest passed %s %R, which the type does not have", what, key);
    }
    Py_DECREF(key);
    Py_XINCREF(found);
    return found;
}

static PyObject *lift_val(PyObject *plan, const uint8_t *v, res_state *rs);

/* n consecutive values at `data` into a new list: with one plan for all (a list) or, when
 * `per_element`, the i-th plan of the tuple `plans` for the i-th value (a tuple) */
static PyObject *lift_seq(PyObject *plans, int per_element, const uint8_t *data, res_state *rs, size_t n) {
    PyObject *out = PyList_New((Py_ssize_t)n);
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *p = per_element ? PyTuple_GET_ITEM(plans, (Py_ssize_t)i) : plans;
        PyObject *item = lift_val(p, data + i * val_size, rs);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, item);
    }
    return out;
}

static PyObject *lift_val(PyObject *plan, const uint8_t *v, res_state *rs) {
    long code;
    PyObject *a, *b;
    if (plan_parts(plan, &code, &a, &b) < 0) {
        return NULL;
    }
    const uint8_t *p = v + payload;
    switch (code) {
    case PL_BOOL: return PyBool_FromLong(*p != 0);
    case PL_S8: return PyLong_FromLong(*(const int8_t *)p);
    case PL_U8: return PyLong_FromLong(*p);
    case PL_S16: { int16_t x; memcpy(&x, p, sizeof x); return PyLong_FromLong(x); }
    case PL_U16: { uint16_t x; memcpy(&x, p, sizeof x); return PyLong_FromLong(x); }
    case PL_S32: { int32_t x; memcpy(&x, p, sizeof x); return PyLong_FromLong(x); }
    case PL_U32: { uint32_t x; memcpy(&x, p, sizeof x); return PyLong_FromUnsignedLong(x); }
    case PL_S64: { int64_t x; memcpy(&x, p, sizeof x); return PyLong_FromLongLong(x); }
    case PL_U64: { uint64_t x; memcpy(&x, p, sizeof x); return PyLong_FromUnsignedLongLong(x); }
    case PL_F32: { float x; memcpy(&x, p, sizeof x); return PyFloat_FromDouble(x); }
    case PL_F64: { double x; memcpy(&x, p, sizeof x); return PyFloat_FromDouble(x); }
    case PL_CHAR: { uint32_t x; memcpy(&x, p, sizeof x); return PyUnicode_FromOrdinal((int)x); }
    case PL_STRING:
        return PyUnicode_DecodeUTF8(rd_ptr(v + vec_data_off), (Py_ssize_t)rd_size(v + vec_size_off), "strict");
    case PL_BYTES: {
        size_t n = rd_size(v + vec_size_off);
        const uint8_t *d = rd_ptr(v + vec_data_off);
        PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
        if (out == NULL) {
            return NULL;
        }
        char *o = PyBytes_AS_STRING(out);
        for (size_t i = 0; i < n; i++) {
            o[i] = (char)d[i * val_size + payload];
        }
        return out;
    }
    case PL_LIST:
        return lift_seq(a, 0, rd_ptr(v + vec_data_off), rs, rd_size(v + vec_size_off));
    case PL_TUPLE: {
        size_t n = rd_size(v + vec_size_off);
        if (n != (size_t)PyTuple_GET_SIZE(a)) {
            PyErr_SetString(PyExc_ValueError, "a tuple of the wrong length");
            return NULL;
        }
        PyObject *items = lift_seq(a, 1, rd_ptr(v + vec_data_off), rs, n);
        if (items == NULL) {
            return NULL;
        }
        PyObject *out = PyList_AsTuple(items);
        Py_DECREF(items);
        return out;
    }
    case PL_RECORD: { /* a: ((name, plan), ...) in field order */
        size_t n = rd_size(v + vec_size_off);
        const uint8_t *d = rd_ptr(v + vec_data_off);
        if (n != (size_t)PyTuple_GET_SIZE(a)) {
            PyErr_SetString(PyExc_ValueError, "a record with the wrong number of fields");
            return NULL;
        }
        PyObject *out = PyDict_New();
        for (size_t i = 0; out != NULL && i < n; i++) {
            PyObject *field = PyTuple_GET_ITEM(a, (Py_ssize_t)i);
            PyObject *item = lift_val(PyTuple_GET_ITEM(field, 1), d + i * entry_size + entry_val, rs);
            if (item == NULL || PyDict_SetItem(out, PyTuple_GET_ITEM(field, 0), item) < 0) {
                Py_XDECREF(item);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(item);
        }
        return out;
    }
    case PL_VARIANT: { /* a: {name bytes: (tag, plan | None)} */
        PyObject *c = lookup_name(a, rd_size(v + vec_size_off), rd_ptr(v + vec_data_off), "variant case");
        if (c == NULL) {
            return NULL;
        }
        PyObject *cplan = PyTuple_GET_ITEM(c, 1);
        PyObject *out;
        if (cplan == Py_None) {
            out = PyObject_CallOneArg(variant_type, PyTuple_GET_ITEM(c, 0));
        } else {
            PyObject *val = lift_val(cplan, rd_ptr(v + variant_val_off), rs);
            PyObject *argv[2] = {PyTuple_GET_ITEM(c, 0), val};
            out = val ? PyObject_Vectorcall(variant_type, argv, 2, NULL) : NULL;
            Py_XDECREF(val);
        }
        Py_DECREF(c);
        return out;
    }
    case PL_ENUM:
        return lookup_name(a, rd_size(v + vec_size_off), rd_ptr(v + vec_data_off), "enum case");
    case PL_OPTION: {
        const uint8_t *inner = rd_ptr(v + ptr_off);
        if (inner == NULL) {
            Py_RETURN_NONE;
        }
        return lift_val(a, inner, rs);
    }
    case PL_RESULT: { /* a: ok plan | None, b: err plan | None */
        int is_ok = v[result_ok_off] != 0;
        PyObject *cplan = is_ok ? a : b;
        const uint8_t *inner = rd_ptr(v + result_val_off);
        PyObject *val;
        if (cplan == Py_None) {
            val = Py_NewRef(Py_None);
        } else if (inner == NULL) {
            PyErr_SetString(PyExc_ValueError, "a result case without its payload");
            return NULL;
        } else {
            val = lift_val(cplan, inner, rs);
        }
        if (val == NULL) {
            return NULL;
        }
        PyObject *out = PyObject_CallOneArg(is_ok ? ok_type : err_type, val);
        Py_DECREF(val);
        return out;
    }
    case PL_FLAGS: { /* a: {name bytes: name} */
        size_t n = rd_size(v + vec_size_off);
        const uint8_t *d = rd_ptr(v + vec_data_off);
        PyObject *out = PySet_New(NULL);
        for (size_t i = 0; out != NULL && i < n; i++) {
            const uint8_t *name = d + i * name_size;
            PyObject *flag = lookup_name(a, rd_size(name + name_size_off), rd_ptr(name + name_data_off), "flag");
            if (flag == NULL || PySet_Add(out, flag) < 0) {
                Py_CLEAR(out);
            }
            Py_XDECREF(flag);
        }
        return out;
    }
    case PL_BORROW: return lift_resource(v, rs, 0);
    case PL_OWN: return lift_resource(v, rs, 1);
    }
    PyErr_SetString(PyExc_ValueError, "unknown value plan code");
    return NULL;
}

/* The value address of a lift/lower call (argument `at` of `want`), after checking the call's shape. */
static uint8_t *value_address(const char *fn, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
                              Py_ssize_t at) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s expects %zd arguments, got %zd", fn, want, nargs);
        return NULL;
    }
    if (!values_configured()) {
        return NULL;
    }
    uint8_t *v = PyLong_AsVoidPtr(args[at]);
    if (v == NULL && !PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s: a NULL value address", fn);
    }
    return v;
}

/* lift(plan, address, ctx) -> the Python value of the val_t at `address` */
static PyObject *lift(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    const uint8_t *v = value_address("lift", args, nargs, 3, 1);
    if (v == NULL) {
        return NULL;
    }
    res_state rs = {args[2], NULL, NULL, NULL, NULL, 0};
    PyObject *out = lift_val(args[0], v, &rs);
    res_release(&rs);
    return out;
}

/* `obj` (a new reference, or NULL after an error) as a u32; the reference is released. */
static int steal_u32(PyObject *obj, const char *what, uint32_t *out) {
    if (obj == NULL) {
        return -1;
    }
    unsigned long x = PyLong_AsUnsignedLong(obj);
    Py_DECREF(obj);
    if (PyErr_Occurred()) {
        return -1;
    }
    if (x > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s out of range: %lu", what, x);
        return -1;
    }
    *out = (uint32_t)x;
    return 0;
}

static int lower_val(PyObject *plan, PyObject *value, uint8_t *v, res_state *rs);

/* A new boxed val_t holding `value` (variant, option and result payloads are boxed). */
static int box_val(PyObject *plan, PyObject *value, res_state *rs, void **out) {
    _Alignas(16) uint8_t tmp[VAL_MAX];
    memset(tmp, 0, sizeof tmp); /* kind 0 (bool): a valid value if the lower fails half-way */
    if (lower_val(plan, value, tmp, rs) < 0) {
        return -1;
    }
    *out = val_new(tmp);
    return 0;
}

static int lower_int(PyObject *value, long long lo, unsigned long long hi, uint8_t *p, size_t width, int is_signed) {
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "expected an int, got %.100s", Py_TYPE(value)->tp_name);
        return -1;
    }
    if (is_signed) {
        long long x = PyLong_AsLongLong(value);
        if (x == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (x < lo || (x > 0 && (unsigned long long)x > hi)) {
            PyErr_Format(PyExc_OverflowError, "%lld is out of range for a %zu-bit signed integer", x, width * 8);
            return -1;
        }
        int8_t b1 = (int8_t)x; int16_t b2 = (int16_t)x; int32_t b4 = (int32_t)x; int64_t b8 = (int64_t)x;
        memcpy(p, width == 1 ? (void *)&b1 : width == 2 ? (void *)&b2 : width == 4 ? (void *)&b4 : (void *)&b8, width);
    } else {
        unsigned long long x = PyLong_AsUnsignedLongLong(value);
        if (x == (unsigned long long)-1 && PyErr_Occurred()) {
            return -1;
        }
        if (x > hi) {
            PyErr_Format(PyExc_OverflowError, "%llu is out of range for a %zu-bit unsigned integer", x, width * 8);
            return -1;
        }
        uint8_t b1 = (uint8_t)x; uint16_t b2 = (uint16_t)x; uint32_t b4 = (uint32_t)x; uint64_t b8 = (uint64_t)x;
        memcpy(p, width == 1 ? (void *)&b1 : width == 2 ? (void *)&b2 : width == 4 ? (void *)&b4 : (void *)&b8, width);
    }
    return 0;
}

static int lower_name_vec(PyObject *value, uint8_t *out) {
    /* a str as a wasm byte vector (string, enum case, flag, field name) at `out` */
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "expected a str, got %.100s", Py_TYPE(value)->tp_name);
        return -1;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(value, &n);
    if (s == NULL) {
        return -1;
    }
    byte_vec_new(out, (size_t)n, s);
    return 0;
}

static int lower_val(PyObject *plan, PyObject *value, uint8_t *v, res_state *rs) {
    long code;
    PyObject *a, *b;
    if (plan_parts(plan, &code, &a, &b) < 0) {
        return -1;
    }
    uint8_t *p = v + payload;
    int kind;
    switch (code) {
    case PL_BOOL: {
        int t = PyObject_IsTrue(value);
        if (t < 0) {
            return -1;
        }
        *p = (uint8_t)t;
        kind = 0;
        break;
    }
    case PL_S8: if (lower_int(value, INT8_MIN, INT8_MAX, p, 1, 1) < 0) return -1; kind = 1; break;
    case PL_U8: if (lower_int(value, 0, UINT8_MAX, p, 1, 0) < 0) return -1; kind = 2; break;
    case PL_S16: if (lower_int(value, INT16_MIN, INT16_MAX, p, 2, 1) < 0) return -1; kind = 3; break;
    case PL_U16: if (lower_int(value, 0, UINT16_MAX, p, 2, 0) < 0) return -1; kind = 4; break;
    case PL_S32: if (lower_int(value, INT32_MIN, INT32_MAX, p, 4, 1) < 0) return -1; kind = 5; break;
    case PL_U32: if (lower_int(value, 0, UINT32_MAX, p, 4, 0) < 0) return -1; kind = 6; break;
    case PL_S64: if (lower_int(value, INT64_MIN, INT64_MAX, p, 8, 1) < 0) return -1; kind = 7; break;
    case PL_U64: if (lower_int(value, 0, UINT64_MAX, p, 8, 0) < 0) return -1; kind = 8; break;
    case PL_F32:
    case PL_F64: {
        double x = PyFloat_AsDouble(value);
        if (x == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        if (code == PL_F32) {
            float f = (float)x;
            memcpy(p, &f, sizeof f);
        } else {
            memcpy(p, &x, sizeof x);
        }
        kind = code == PL_F32 ? 9 : 10;
        break;
    }
    case PL_CHAR: {
        if (!PyUnicode_Check(value) || PyUnicode_GET_LENGTH(value) != 1) {
            PyErr_SetString(PyExc_TypeError, "a char is a str of length 1");
            return -1;
        }
        uint32_t c = PyUnicode_READ_CHAR(value, 0);
        memcpy(p, &c, sizeof c);
        kind = K_CHAR_I;
        break;
    }
    case PL_STRING:
        if (lower_name_vec(value, p) < 0) {
            return -1;
        }
        kind = K_STRING_I;
        break;
    case PL_ENUM:
        if (lower_name_vec(value, p) < 0) {
            return -1;
        }
        kind = K_ENUM_I;
        break;
    case PL_BYTES: {
        Py_buffer buf;
        if (PyObject_GetBuffer(value, &buf, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        size_t n = (size_t)buf.len;
        vallist_new_uninit(p, n);
        uint8_t *d = rd_ptr(v + vec_data_off);
        const uint8_t *src = buf.buf;
        for (size_t i = 0; i < n; i++) {
            uint8_t *e = d + i * val_size;
            e[0] = kinds[2];
            e[payload] = src[i];
        }
        PyBuffer_Release(&buf);
        kind = K_LIST_I;
        break;
    }
    case PL_LIST:
    case PL_TUPLE:
    case PL_FLAGS: {
        PyObject *seq = PySequence_Fast(value, "expected a sequence");
        if (seq == NULL) {
            return -1;
        }
        size_t n = (size_t)PySequence_Fast_GET_SIZE(seq);
        if (code == PL_TUPLE && n != (size_t)PyTuple_GET_SIZE(a)) {
            PyErr_Format(PyExc_ValueError, "expected a tuple of %zd items, got %zu", PyTuple_GET_SIZE(a), n);
            Py_DECREF(seq);
            return -1;
        }
        (code == PL_LIST ? vallist_new_uninit : code == PL_TUPLE ? valtuple_new_uninit : valflags_new_uninit)(p, n);
        uint8_t *d = rd_ptr(v + vec_data_off);
        for (size_t i = 0; i < n; i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i);
            int rc = code == PL_FLAGS ? lower_name_vec(item, d + i * name_size)
                     : lower_val(code == PL_LIST ? a : PyTuple_GET_ITEM(a, (Py_ssize_t)i), item, d + i * val_size, rs);
            if (rc < 0) {
                Py_DECREF(seq); /* the vector's storage leaks, as in values.py: the kind is not written */
                return -1;
            }
        }
        Py_DECREF(seq);
        kind = code == PL_LIST ? K_LIST_I : code == PL_TUPLE ? K_TUPLE_I : K_FLAGS_I;
        break;
    }
    case PL_RECORD: { /* a: ((name, plan), ...); the value is a mapping by field name */
        size_t n = (size_t)PyTuple_GET_SIZE(a);
        valrecord_new_uninit(p, n);
        uint8_t *e = rd_ptr(v + vec_data_off);
        for (size_t i = 0; i < n; i++, e += entry_size) {
            PyObject *field = PyTuple_GET_ITEM(a, (Py_ssize_t)i);
            PyObject *item = PyObject_GetItem(value, PyTuple_GET_ITEM(field, 0));
            if (item == NULL || lower_name_vec(PyTuple_GET_ITEM(field, 0), e) < 0 ||
                lower_val(PyTuple_GET_ITEM(field, 1), item, e + entry_val, rs) < 0) {
                Py_XDECREF(item);
                return -1;
            }
            Py_DECREF(item);
        }
        kind = K_RECORD_I;
        break;
    }
    case PL_VARIANT: { /* b: {tag: (name bytes, plan | None)}; a bare str is a case without payload */
        PyObject *tag, *payload_value;
        if (PyUnicode_Check(value)) {
            tag = Py_NewRef(value);
            payload_value = Py_NewRef(Py_None);
        } else {
            tag = PyObject_GetAttr(value, str_tag);
            payload_value = tag ? PyObject_GetAttr(value, str_value) : NULL;
            if (payload_value == NULL) {
                Py_XDECREF(tag);
                return -1;
            }
        }
        PyObject *c = PyDict_GetItemWithError(b, tag);
        if (c == NULL) {
            if (!PyErr_Occurred()) {
                PyObject *names = PySequence_List(b);
                if (names != NULL && PyList_Sort(names) == 0) {
                    PyErr_Format(PyExc_TypeError, "variant has no case %R; cases: %R", tag, names);
                }
                Py_XDECREF(names);
            }
            Py_DECREF(tag);
            Py_DECREF(payload_value);
            return -1;
        }
        void *boxed = NULL;
        int rc = PyTuple_GET_ITEM(c, 1) == Py_None ? 0 : box_val(PyTuple_GET_ITEM(c, 1), payload_value, rs, &boxed);
        Py_DECREF(tag);
        Py_DECREF(payload_value);
        if (rc < 0) {
            return -1;
        }
        PyObject *encoded = PyTuple_GET_ITEM(c, 0);
        byte_vec_new(p, (size_t)PyBytes_GET_SIZE(encoded), PyBytes_AS_STRING(encoded));
        wr_ptr(v + variant_val_off, boxed);
        kind = K_VARIANT_I;
        break;
    }
    case PL_OPTION: {
        void *boxed = NULL;
        if (value != Py_None && box_val(a, value, rs, &boxed) < 0) {
            return -1;
        }
        wr_ptr(v + ptr_off, boxed);
        kind = K_OPTION_I;
        break;
    }
    case PL_RESULT: { /* Err(x) is the error case; Ok(x) or a bare value the ok case */
        int is_err = PyObject_TypeCheck(value, (PyTypeObject *)err_type);
        PyObject *inner;
        if (is_err || PyObject_TypeCheck(value, (PyTypeObject *)ok_type)) {
            inner = PyObject_GetAttr(value, str_value);
            if (inner == NULL) {
                return -1;
            }
        } else {
            inner = Py_NewRef(value);
        }
        PyObject *cplan = is_err ? b : a;
        void *boxed = NULL;
        int rc = cplan == Py_None ? 0 : box_val(cplan, inner, rs, &boxed);
        Py_DECREF(inner);
        if (rc < 0) {
            return -1;
        }
        v[result_ok_off] = (uint8_t)!is_err;
        wr_ptr(v + result_val_off, boxed);
        kind = K_RESULT_I;
        break;
    }
    case PL_OWN: {
        if (res_ready(rs) < 0) {
            return -1;
        }
        uint32_t type, rep;
        if (steal_u32(PyObject_GetAttr(value, str_resource_id), "a resource type id", &type) < 0) {
            return -1;
        }
        /* ResourceTable.push without its Python frame: the next handle, then items[handle] = value */
        PyObject *handle = PyIter_Next(rs->counter);
        if (handle == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError, "the resource table's counter ran out");
            }
            return -1;
        }
        if (PyDict_SetItem(rs->items, handle, value) < 0) {
            Py_DECREF(handle);
            return -1;
        }
        if (steal_u32(handle, "a resource handle", &rep) < 0) {
            return -1;
        }
        void *host = host_new(1, rep, type);
        void *any = NULL;
        void *err = host_to_any(rs->store, host, &any);
        host_delete(host);
        if (err != NULL) {
            wasmtime_error(err);
            return -1;
        }
        wr_ptr(v + ptr_off, any);
        kind = K_RESOURCE_I;
        break;
    }
    case PL_BORROW:
        PyErr_SetString(PyExc_TypeError, "the host never lends borrowed handles to guests in these interfaces");
        return -1;
    default:
        PyErr_SetString(PyExc_ValueError, "unknown value plan code");
        return -1;
    }
    v[0] = kinds[kind];
    return 0;
}

/* lower(plan, value, address, ctx): write `value` as the val_t at `address` */
static PyObject *lower(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    uint8_t *v = value_address("lower", args, nargs, 4, 2);
    if (v == NULL) {
        return NULL;
    }
    res_state rs = {args[3], NULL, NULL, NULL, NULL, 0};
    int rc = lower_val(args[0], args[1], v, &rs);
    res_release(&rs);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- 5. one request's store, instance and call: run_guest ----------------------------------------- */
/*
 * What runtime.py's Python path does with ten ctypes calls (each converting its arguments, dropping
 * and retaking the GIL, allocating the result) and a ctypes frame structure, in one call: a fresh
 * store with the request's epoch deadline and memory limit, the instance, the handler's two `own`
 * arguments, the call, post-return, and the store's teardown. The GIL is released around the four
 * calls that run guest code or take long (instantiate, call, post-return, store teardown), as the
 * ctypes path does. The C API's function addresses and the sizes of its instance and function
 * out-parameters come from Python (configure_runner), which takes them from wasmtime-py.
 */
typedef void *(*store_new_fn)(void *engine, void *data, void *finalizer);
typedef void *(*store_context_fn)(void *store);
typedef void (*store_limiter_fn)(void *store, int64_t memory, int64_t table_elements, int64_t instances,
                                 int64_t tables, int64_t memories);
typedef void (*store_delete_fn)(void *store);
typedef void (*set_deadline_fn)(void *context, uint64_t ticks);
typedef void *(*instantiate_fn)(const void *linker, void *context, const void *component, void *instance_out);
typedef _Bool (*get_func_fn)(const void *instance, void *context, const void *index, void *func_out);
typedef void *(*func_call_fn)(const void *func, void *context, const void *args, size_t nargs, void *results,
                              size_t nresults);
typedef void *(*post_return_fn)(const void *func, void *context);
typedef void (*val_delete_fn)(void *val);

#define RUN_FRAME 512 /* bytes for the instance, the function and two argument values */
static struct {
    store_new_fn store_new;
    store_context_fn store_context;
    store_limiter_fn store_limiter;
    store_delete_fn store_delete;
    set_deadline_fn set_deadline;
    instantiate_fn instantiate;
    get_func_fn get_func;
    func_call_fn func_call;
    post_return_fn post_return;
    val_delete_fn val_delete;
    size_t func_off, args_off; /* in the frame; the instance is at 0 */
    int ready;
} run;

/* configure_runner((store_new, store_context, store_limiter, store_delete, set_epoch_deadline,
 * linker_instantiate, instance_get_func, func_call, func_post_return, val_delete), instance_size,
 * func_size) */
static PyObject *configure_runner(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *fns;
    Py_ssize_t instance_size, func_size;
    if (!PyArg_ParseTuple(args, "O!nn", &PyTuple_Type, &fns, &instance_size, &func_size)) {
        return NULL;
    }
    void *a[10];
    if (PyTuple_GET_SIZE(fns) != 10) {
        PyErr_SetString(PyExc_ValueError, "configure_runner(): expected 10 function addresses");
        return NULL;
    }
    for (int i = 0; i < 10; i++) {
        a[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(fns, i));
        if (a[i] == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "configure_runner(): a NULL function address");
            }
            return NULL;
        }
    }
    if (!values_configured()) {
        return NULL; /* run_guest lowers the handler's arguments: the value layout must be known */
    }
    size_t func_off = ((size_t)instance_size + 15) & ~(size_t)15;
    size_t args_off = (func_off + (size_t)func_size + 15) & ~(size_t)15;
    if (instance_size <= 0 || func_size <= 0 || args_off + 2 * val_size > RUN_FRAME) {
        PyErr_SetString(PyExc_ValueError, "configure_runner(): wasmtime's out-parameters do not fit the frame");
        return NULL;
    }
    run.store_new = (store_new_fn)a[0];
    run.store_context = (store_context_fn)a[1];
    run.store_limiter = (store_limiter_fn)a[2];
    run.store_delete = (store_delete_fn)a[3];
    run.set_deadline = (set_deadline_fn)a[4];
    run.instantiate = (instantiate_fn)a[5];
    run.get_func = (get_func_fn)a[6];
    run.func_call = (func_call_fn)a[7];
    run.post_return = (post_return_fn)a[8];
    run.val_delete = (val_delete_fn)a[9];
    run.func_off = func_off;
    run.args_off = args_off;
    run.ready = 1;
    Py_RETURN_NONE;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* What run_guest reached: its result's first item. */
enum { RUN_INSTANTIATE_FAILED, RUN_NO_FUNC, RUN_CALL_FAILED, RUN_OK };

/* run_guest(engine, linker, component, func_index, deadline_ticks, max_memory, request, outparam, ctx,
 *           own_plan) -> (stage, error_address, instantiate_s, handle_s)
 *
 * Addresses are ints: the engine, linker and component (owned by the caller's runtime for as long as
 * it lives), the handler's export index; max_memory < 0 means no limit. `stage` is one of RUN_*: for
 * RUN_INSTANTIATE_FAILED and RUN_CALL_FAILED, `error_address` is the wasmtime_error_t* (owned by the
 * caller, who raises it with capi.raise_error); handle_s is 0 unless the call completed. A Python
 * exception (lowering the arguments) propagates, after the store is gone. ctx.store_ptr is set, and
 * ctx is the thread's call context (with `req`) for the duration; store_ptr is None afterwards and the
 * thread's context is what it was before. */
static PyObject *run_guest(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 10) {
        PyErr_Format(PyExc_TypeError, "run_guest expects 10 arguments, got %zd", nargs);
        return NULL;
    }
    if (!run.ready) {
        PyErr_SetString(PyExc_RuntimeError, "run_guest: configure_runner() was not called");
        return NULL;
    }
    void *engine = PyLong_AsVoidPtr(args[0]);
    void *linker = engine ? PyLong_AsVoidPtr(args[1]) : NULL;
    void *component = linker ? PyLong_AsVoidPtr(args[2]) : NULL;
    void *index = component ? PyLong_AsVoidPtr(args[3]) : NULL;
    if (index == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "run_guest: a NULL address");
        }
        return NULL;
    }
    unsigned long long ticks = PyLong_AsUnsignedLongLong(args[4]);
    long long max_memory = ticks == (unsigned long long)-1 && PyErr_Occurred() ? 0 : PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *request = args[6], *outparam = args[7], *ctx = args[8], *own_plan = args[9];

    _Alignas(16) uint8_t frame[RUN_FRAME];
    memset(frame, 0, sizeof frame);
    uint8_t *instance = frame, *func = frame + run.func_off, *argv = frame + run.args_off;
    void *store = run.store_new(engine, NULL, NULL);
    void *cx = run.store_context(store);
    run.set_deadline(cx, (uint64_t)ticks);
    if (max_memory >= 0) {
        run.store_limiter(store, max_memory, -1, -1, -1, -1);
    }
    int stage = RUN_INSTANTIATE_FAILED;
    void *err = NULL;
    double t0 = 0, t1 = 0, t2 = 0;
    int lowered = 0;
    /* This thread's call context and request state, as they were (NULL unless a request runs inside
     * a host call of another: then they are the outer request's, restored when this one ends). */
    PyObject *outer_ctx = current_ctx;
    res_state outer_req = req;
    res_state mine = {ctx, cx, NULL, NULL, NULL, 0};
    PyObject *cx_obj = PyLong_FromVoidPtr(cx);
    if (cx_obj == NULL || PyObject_SetAttr(ctx, str_store_ptr, cx_obj) < 0) {
        Py_XDECREF(cx_obj);
        goto teardown;
    }
    Py_DECREF(cx_obj);
    if (res_lookup(&mine) < 0) {
        goto teardown;
    }
    Py_INCREF(ctx);
    current_ctx = ctx;
    req = mine;

    t0 = now_s();
    Py_BEGIN_ALLOW_THREADS
    err = run.instantiate(linker, cx, component, instance);
    Py_END_ALLOW_THREADS
    t1 = now_s();
    if (err != NULL) {
        goto teardown;
    }
    if (!run.get_func(instance, cx, index, func)) {
        stage = RUN_NO_FUNC;
        goto teardown;
    }
    res_state rs = {ctx, NULL, NULL, NULL, NULL, 0};
    if (lower_val(own_plan, request, argv, &rs) == 0) {
        lowered = 1;
        if (lower_val(own_plan, outparam, argv + val_size, &rs) == 0) {
            lowered = 2;
        }
    }
    res_release(&rs);
    if (lowered < 2) {
        goto teardown; /* a Python exception is set */
    }
    stage = RUN_CALL_FAILED;
    Py_BEGIN_ALLOW_THREADS
    err = run.func_call(func, cx, argv, 2, NULL, 0);
    Py_END_ALLOW_THREADS
    run.val_delete(argv); /* the call copies its arguments; the two resource boxes stay ours to free */
    run.val_delete(argv + val_size);
    lowered = 0;
    if (err == NULL) {
        Py_BEGIN_ALLOW_THREADS
        err = run.post_return(func, cx);
        Py_END_ALLOW_THREADS
    }
    t2 = now_s();
    if (err == NULL) {
        stage = RUN_OK;
    }

teardown:;
    PyObject *exc_type = NULL, *exc_value = NULL, *exc_tb = NULL;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb); /* keep a lowering error across the teardown */
    for (int i = 0; i < lowered; i++) {
        run.val_delete(argv + (size_t)i * val_size);
    }
    if (current_ctx == ctx && req.ctx == ctx) { /* this request's: put the outer ones back */
        Py_DECREF(ctx);
        current_ctx = outer_ctx;
        req = outer_req;
    }
    res_release(&mine);
    if (PyObject_SetAttr(ctx, str_store_ptr, Py_None) < 0) {
        PyErr_Clear();
    }
    Py_BEGIN_ALLOW_THREADS
    run.store_delete(store);
    Py_END_ALLOW_THREADS
    if (exc_type != NULL) { /* err is NULL: Python fails only before instantiation or after it succeeded */
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return NULL;
    }
    double handle_s = stage == RUN_OK ? t2 - t1 : 0.0; /* as the ctypes path: timed when the call completes */
    return Py_BuildValue("(iNdd)", stage, PyLong_FromVoidPtr(err), t1 - t0, handle_s);
}

/* ---- 4. periodic threads: the epoch ticker and the worker pool's watch ------------------------ */

typedef struct periodic periodic_t;
struct periodic {
    pthread_t thread;
    long long interval_ns;
    pthread_mutex_t mu; /* with `wake`: the thread sleeps on it, so a stop ends the sleep at once */
    pthread_cond_t wake;
    int stop;           /* under mu */
    int joined;
    PyObject *owner; /* kept alive as long as the thread runs (the ticker's wasmtime.Engine) */
    void (*beat)(periodic_t *);
    /* the ticker's */
    void (*increment)(void *engine); /* wasmtime_engine_increment_epoch */
    void *engine;                    /* wasm_engine_t *, owned by `owner` */
    /* the watch's */
    atomic_long waiting;    /* workers waiting for work */
    atomic_ulong progress;  /* requests taken or finished so far */
    unsigned long seen;     /* progress at the previous beat */
    int wake_fd;            /* eventfd written when the pool is stalled */
};

static void *periodic_main(void *arg) {
    periodic_t *t = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        long long ns = next.tv_nsec + t->interval_ns;
        next.tv_sec += ns / 1000000000LL;
        next.tv_nsec = ns % 1000000000LL;
        pthread_mutex_lock(&t->mu);
        int rc = 0;
        while (!t->stop && rc != ETIMEDOUT) {
            rc = pthread_cond_timedwait(&t->wake, &t->mu, &next);
        }
        int stop = t->stop;
        pthread_mutex_unlock(&t->mu);
        if (stop) {
            break;
        }
        t->beat(t);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec + 1) {
            next = now; /* descheduled for long (a suspended VM): beat from now on, not in a burst */
        }
    }
    return NULL;
}

static void periodic_join(periodic_t *t) {
    if (t->joined) {
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->stop = 1;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->mu);
    Py_BEGIN_ALLOW_THREADS pthread_join(t->thread, NULL); /* at once: it never takes the GIL */
    Py_END_ALLOW_THREADS t->joined = 1;
}

static void periodic_free(PyObject *capsule) {
    periodic_t *t = PyCapsule_GetPointer(capsule, "kubespin.periodic");
    if (t == NULL) {
        PyErr_Clear();
        return;
    }
    periodic_join(t);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->mu);
    Py_XDECREF(t->owner);
    PyMem_RawFree(t);
}

/* Start `t` (filled in by the caller) on a thread of its own; the capsule stops it when collected. */
static PyObject *periodic_start(periodic_t *t, double interval, PyObject *owner) {
    t->interval_ns = interval * 1e9 < 1000 ? 1000 : (long long)(interval * 1e9);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* deadlines are CLOCK_MONOTONIC */
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->wake, &attr);
    pthread_condattr_destroy(&attr);
    int rc = pthread_create(&t->thread, NULL, periodic_main, t);
    if (rc != 0) {
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->mu);
        PyMem_RawFree(t);
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_XINCREF(owner);
    t->owner = owner;
    PyObject *capsule = PyCapsule_New(t, "kubespin.periodic", periodic_free);
    if (capsule == NULL) {
        periodic_join(t);
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->mu);
        Py_XDECREF(owner);
        PyMem_RawFree(t);
    }
    return capsule;
}

/* A zeroed periodic_t that will beat with `beat`; NULL with a ValueError saying `invalid` when the
 * caller's arguments are not `valid` */
static periodic_t *periodic_new(void (*beat)(periodic_t *), int valid, const char *invalid) {
    if (!valid) {
        PyErr_SetString(PyExc_ValueError, invalid);
        return NULL;
    }
    periodic_t *t = PyMem_RawCalloc(1, sizeof *t);
    if (t == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    t->beat = beat;
    return t;
}

static void ticker_beat(periodic_t *t) { t->increment(t->engine); }

/* start_ticker(increment_address, engine_address, interval_s, owner) -> handle */
static PyObject *start_ticker(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long increment, engine;
    double interval;
    PyObject *owner;
    if (!PyArg_ParseTuple(args, "KKdO:start_ticker", &increment, &engine, &interval, &owner)) {
        return NULL;
    }
    periodic_t *t = periodic_new(ticker_beat, increment != 0 && engine != 0 && interval > 0,
                                 "start_ticker needs a function, an engine and a positive interval");
    if (t == NULL) {
        return NULL;
    }
    t->increment = (void (*)(void *))(uintptr_t)increment;
    t->engine = (void *)(uintptr_t)engine;
    return periodic_start(t, interval, owner);
}

/* The pool is stalled when no worker waits for work and no request was taken or finished since the
 * previous beat: wake whoever reads `wake_fd` (the pool releases a spare worker). */
static void watch_beat(periodic_t *t) {
    unsigned long progress = atomic_load(&t->progress);
    if (atomic_load(&t->waiting) <= 0 && progress == t->seen) {
        uint64_t one = 1;
        ssize_t n = write(t->wake_fd, &one, sizeof one);
        (void)n; /* EAGAIN: a wake-up is already pending */
    }
    t->seen = progress;
}

/* start_watch(wake_fd, interval_s) -> handle */
static PyObject *start_watch(PyObject *self, PyObject *args) {
    (void)self;
    int wake_fd;
    double interval;
    if (!PyArg_ParseTuple(args, "id:start_watch", &wake_fd, &interval)) {
        return NULL;
    }
    periodic_t *t = periodic_new(watch_beat, wake_fd >= 0 && interval > 0,
                                 "start_watch needs a descriptor and a positive interval");
    if (t == NULL) {
        return NULL;
    }
    t->wake_fd = wake_fd;
    atomic_init(&t->waiting, 0);
    atomic_init(&t->progress, 0);
    t->seen = (unsigned long)-1;
    return periodic_start(t, interval, NULL);
}

static periodic_t *periodic_arg(PyObject *capsule) {
    return PyCapsule_GetPointer(capsule, "kubespin.periodic");
}

/* watch_waiting(handle, delta): a worker starts (+1) or stops (-1) waiting for work, or (0) ends a
 * request; all but +1 count as progress (a stop took a connection, or timed out and looks again) */
static PyObject *watch_waiting(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    periodic_t *t;
    long delta;
    if (nargs != 2 || (t = periodic_arg(args[0])) == NULL || ((delta = PyLong_AsLong(args[1])) == -1 && PyErr_Occurred())) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "watch_waiting(handle, delta)");
        }
        return NULL;
    }
    atomic_fetch_add(&t->waiting, delta);
    if (delta <= 0) {
        atomic_fetch_add(&t->progress, 1);
    }
    Py_RETURN_NONE;
}

/* stop(handle): stop the thread and wait for it */
static PyObject *stop(PyObject *self, PyObject *capsule) {
    (void)self;
    periodic_t *t = periodic_arg(capsule);
    if (t == NULL) {
        return NULL;
    }
    periodic_join(t);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure_values", configure_values, METH_VARARGS,
     "configure_values(layout, kinds, functions, (Ok, Err, Variant, HostTrap, raise_error))"},
    {"lift", (PyCFunction)(void (*)(void))lift, METH_FASTCALL, "lift(plan, address, ctx) -> value"},
    {"lower", (PyCFunction)(void (*)(void))lower, METH_FASTCALL, "lower(plan, value, address, ctx)"},
    {"start_ticker", start_ticker, METH_VARARGS,
     "start_ticker(increment_address, engine_address, interval_s, owner) -> handle: advances the epoch, no GIL"},
    {"start_watch", start_watch, METH_VARARGS,
     "start_watch(wake_fd, interval_s) -> handle: writes wake_fd when the worker pool is stalled"},
    {"watch_waiting", (PyCFunction)(void (*)(void))watch_waiting, METH_FASTCALL,
     "watch_waiting(handle, delta): a worker starts (+1) or stops (-1) waiting for work, or (0) ends a request"},
    {"stop", stop, METH_O, "stop(handle): stop a ticker or watch and wait for its thread"},
    {"set_context", set_context, METH_O, "set_context(ctx | None): the CallContext host calls on this thread get"},
    {"configure_runner", configure_runner, METH_VARARGS,
     "configure_runner(C API function addresses, instance_size, func_size): for run_guest"},
    {"run_guest", (PyCFunction)(void (*)(void))run_guest, METH_FASTCALL,
     "run_guest(engine, linker, component, func_index, deadline_ticks, max_memory, request, outparam, ctx, "
     "own_plan) -> (stage, error_address, instantiate_s, handle_s)"},
    {"configure", configure, METH_VARARGS,
     "configure(kind_u64, error_new, any_to_host, host_rep, host_delete, host_new, host_to_any)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kubespin_shim.host._native",
    "Native wasmtime host callbacks (monotonic clock, random u64, the Python host-call entry) and resource helpers.", -1, methods,
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
        {"host_call", (void *)host_call},
        {"resource_drop", (void *)resource_drop},
    };
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&str_invoke, "invoke"}, {&str_compile, "compile"}, {&str_failed, "failed"},
        {&str_store_ptr, "store_ptr"}, {&str_drop, "drop"}, {&str_close, "close"}, {&str_native, "native"}, {&str_table, "table"}, {&str_items, "_items"},
        {&str_counter, "_counter"}, {&str_resource_id, "resource_id"}, {&str_tag, "tag"}, {&str_value, "value"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
            Py_DECREF(m);
            return NULL;
        }
    }
    for (size_t i = 0; i < sizeof exported / sizeof exported[0]; i++) {
        if (PyModule_AddObject(m, exported[i].name, PyLong_FromVoidPtr(exported[i].fn)) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    PyObject *codes = PyDict_New();
    for (int i = 0; codes != NULL && i < PL_COUNT; i++) {
        PyObject *c = PyLong_FromLong(i);
        if (c == NULL || PyDict_SetItemString(codes, plan_names[i], c) < 0) {
            Py_CLEAR(codes);
        }
        Py_XDECREF(c);
    }
    if (codes == NULL || PyModule_AddObject(m, "PLAN_CODES", codes) < 0) {
        Py_XDECREF(codes);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "PAYLOAD_OFFSET", (long)offsetof(val_u64, u64)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
