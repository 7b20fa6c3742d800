/* What the data path's C modules (arp/net/_sockio.c, arp/protocol/_wire.c) share. */

#ifndef ARP_NATIVE_ARGS_H
#define ARP_NATIVE_ARGS_H

#define HEADER_SIZE 4 /* arp.protocol.tunnel.HEADER: a big-endian unsigned 32-bit length */

/* A non-negative index argument into *out; -1 with an exception set otherwise. */
static int
index_arg(PyObject *arg, const char *name, Py_ssize_t *out)
{
    Py_ssize_t value = PyLong_AsSsize_t(arg);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < 0) {
        PyErr_Format(PyExc_ValueError, "%s must not be negative", name);
        return -1;
    }
    *out = value;
    return 0;
}

/* The bytes an argument holds, for the length of one call. A bytearray or bytes is read
 * directly: the buffer protocol's call, fill and release cost about 300 instructions a
 * buffer, a tenth of a keep-alive request in arps. A bytearray's export count is held as its
 * own buffer protocol holds it, so nothing (a signal handler run on EINTR) can resize it
 * meanwhile; bytes cannot change. Anything else goes through the buffer protocol. */
typedef struct {
    char *buf;
    Py_ssize_t len;
    PyByteArrayObject *array; /* the bytearray whose export is held, or NULL */
    Py_buffer view;           /* the buffer protocol's view, when view.obj is set */
} Span;

/* Fill *span from obj (writable: a bytearray or a writable buffer); -1 with an exception. */
static int
span_get(PyObject *obj, int writable, Span *span)
{
    span->array = NULL;
    span->view.obj = NULL;
    if (PyByteArray_CheckExact(obj)) {
        span->array = (PyByteArrayObject *)obj;
        span->array->ob_exports++;
        span->buf = PyByteArray_AS_STRING(obj);
        span->len = PyByteArray_GET_SIZE(obj);
        return 0;
    }
    if (!writable && PyBytes_CheckExact(obj)) {
        span->buf = PyBytes_AS_STRING(obj);
        span->len = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, &span->view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        return -1;
    }
    span->buf = (char *)span->view.buf;
    span->len = span->view.len;
    return 0;
}

static void
span_release(Span *span)
{
    if (span->array != NULL) {
        span->array->ob_exports--;
    } else if (span->view.obj != NULL) {
        PyBuffer_Release(&span->view);
    }
}

#endif
