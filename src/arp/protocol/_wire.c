/* arp.protocol._wire: two byte checks of the data path, in C (see arp/protocol/wire.py,
 * which does the same in Python when this is not built).
 *
 * Why: each runs once per keep-alive request on a read buffer. In compiled Python the frame
 * check cost about 1,800 instructions (a struct call, a tuple, a memoryview slice) and the
 * same-answer compare about 1,600 (a slice, a copy); here each is a bounds check and a few
 * loads or a memcmp.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../_native_args.h"

#include <stdint.h>
#include <string.h>

PyDoc_STRVAR(single_frame_doc,
"single_frame(buffer, size) -> int\n\n"
"The payload's length when buffer[:size] is exactly one whole data frame with a payload,\n"
"else -1.");

static PyObject *
wire_single_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "single_frame(buffer, size) takes 2 arguments");
        return NULL;
    }
    Py_ssize_t size;
    if (index_arg(args[1], "size", &size) < 0) {
        return NULL;
    }
    Span span;
    if (span_get(args[0], 0, &span) < 0) {
        return NULL;
    }
    long result = -1;
    if (size > span.len) {
        span_release(&span);
        PyErr_SetString(PyExc_ValueError, "size must be inside the buffer");
        return NULL;
    }
    if (size > HEADER_SIZE) {
        const unsigned char *p = (const unsigned char *)span.buf;
        uint32_t length = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                          ((uint32_t)p[2] << 8) | (uint32_t)p[3];
        if ((Py_ssize_t)length == size - HEADER_SIZE) {
            result = (long)length;
        }
    }
    span_release(&span);
    return PyLong_FromLong(result);
}

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
    {"single_frame", (PyCFunction)(void (*)(void))wire_single_frame, METH_FASTCALL,
     single_frame_doc},
    {"same_at", (PyCFunction)(void (*)(void))wire_same_at, METH_FASTCALL, same_at_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wire_module = {
    PyModuleDef_HEAD_INIT,
    "arp.protocol._wire",
    "Byte checks of the data path (see arp/protocol/wire.py).",
    -1,
    wire_methods,
};

PyMODINIT_FUNC
PyInit__wire(void)
{
    return PyModule_Create(&wire_module);
}
