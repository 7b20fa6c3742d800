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

#endif
