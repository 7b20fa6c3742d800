/* arp.protocol._wire: the data path's byte compare, in C (see arp/protocol/wire.py, which
 * does the same in Python when this is not built).
 *
 * Why: it runs once per keep-alive request on a read buffer. In compiled Python the
 * same-answer compare cost about 1,600 instructions (a slice, a copy); here it is a bounds
 * check and a memcmp. (The frame check that was here is part of arp.net._sockio's
 * forward_frame now, the read it checks.)
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../_native_args.h"

#include <stdint.h>
#include <string.h>

PyDoc_STRVAR(same_at_doc,
"same_at(buffer, start, expected) -> bool\n\n"
"Whether buffer[start:start + len(expected)] equals expected, compared with memcmp.");

static PyObject *
wire_same_at(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "same_at(buffer, start, expected) takes 3 arguments");
        return NULL;
    }
    Py_ssize_t start;
    if (index_arg(args[1], "start", &start) < 0) {
        return NULL;
    }
    Span view, expected;
    if (span_get(args[0], 0, &view) < 0) {
        return NULL;
    }
    if (span_get(args[2], 0, &expected) < 0) {
        span_release(&view);
        return NULL;
    }
    int same = start <= view.len && expected.len <= view.len - start &&
               memcmp(view.buf + start, expected.buf, (size_t)expected.len) == 0;
    span_release(&expected);
    span_release(&view);
    return PyBool_FromLong(same);
}

static PyMethodDef wire_methods[] = {
    {"same_at", (PyCFunction)(void (*)(void))wire_same_at, METH_FASTCALL, same_at_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wire_module = {
    PyModuleDef_HEAD_INIT,
    "arp.protocol._wire",
    "The data path's byte compare (see arp/protocol/wire.py).",
    -1,
    wire_methods,
};

PyMODINIT_FUNC
PyInit__wire(void)
{
    return PyModule_Create(&wire_module);
}
