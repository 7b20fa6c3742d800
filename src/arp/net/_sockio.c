/* arp.net._sockio: the data path's socket calls, without what a non-blocking call to the
 * socket module pays for per call (see arp/net/sockio.py, which falls back to the socket
 * module's own methods when this is not built).
 *
 * Why: per keep-alive request arps and arpc each make four socket calls. Through the socket
 * module each costs about 930 instructions before and after the system call itself: a method
 * lookup, an argument tuple parsed by format string, a memoryview slice for the range, and a
 * release and retake of the GIL. Here each is a fast call with a range in integers, and the
 * GIL is kept: every call passes MSG_DONTWAIT, so none can block, whatever the socket's mode.
 *
 * Safety:
 * - The descriptor is read from the socket object at each call, never cached: a closed
 *   socket reads -1 and fails with EBADF, as the socket module's methods do.
 * - The module reads the descriptor from the start of CPython's socket and epoll objects
 *   (their first field after the object header, as in CPython's socketmodule.h and
 *   selectmodule.c). On import it checks that layout against `fileno()` of a real socket and
 *   a real epoll and refuses to load if either differs; the callers then use the socket and
 *   select modules.
 * - Every range is checked against its buffer; the buffer is held through the call (with the
 *   GIL kept, nothing resizes it meanwhile).
 * - Errors raise OSError with errno, so the subclasses (BlockingIOError, ConnectionResetError,
 *   BrokenPipeError) are those the socket module raises; EINTR retries after signal handlers
 *   ran (PEP 475), as the socket module does.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../_native_args.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* The head of CPython's PySocketSockObject (Modules/socketmodule.h), SOCKET_T being int. */
typedef struct {
    PyObject_HEAD
    int sock_fd;
} SocketHead;

/* The head of CPython's pyEpoll_Object (Modules/selectmodule.c). */
typedef struct {
    PyObject_HEAD
    int epfd;
} EpollHead;

static PyTypeObject *socket_type = NULL;
static PyTypeObject *epoll_type = NULL;
/* The last subclass of _socket.socket seen (socket.socket, in practice), held: checking it
 * first spares the MRO walk of PyType_IsSubtype on every call. */
static PyTypeObject *socket_subtype = NULL;

static int
fd_of(PyObject *sock)
{
    PyTypeObject *type = Py_TYPE(sock);
    if (type != socket_subtype && type != socket_type) {
        if (!PyType_IsSubtype(type, socket_type)) {
            PyErr_Format(PyExc_TypeError, "a socket is required, not %.100s", type->tp_name);
            return -2;
        }
        Py_INCREF(type);
        Py_XSETREF(socket_subtype, type);
    }
    return ((SocketHead *)sock)->sock_fd;
}

/* recv() into buf[start:], retried on EINTR; -1 with an exception set on error. */
static Py_ssize_t
recv_at(int fd, char *buf, Py_ssize_t size)
{
    for (;;) {
        ssize_t n = recv(fd, buf, (size_t)size, MSG_DONTWAIT);
        if (n >= 0) {
            return n;
        }
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* send() of buf[:size] without blocking (MSG_DONTWAIT | MSG_NOSIGNAL added to flags),
 * retried on EINTR: the count sent; -1 with an exception set (BlockingIOError when full). */
static Py_ssize_t
send_at(int fd, const char *buf, Py_ssize_t size, int flags)
{
    for (;;) {
        ssize_t n = send(fd, buf, (size_t)size, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) {
            return n;
        }
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* recv() into span[4:] with the data frame's header of the count written into span[:4]
 * (the count; 0: the peer's end, an end frame); -1 with an exception set. */
static Py_ssize_t
recv_framed(int fd, Span *span)
{
    if (span->len <= HEADER_SIZE || span->len - HEADER_SIZE > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "the buffer must hold a header and a payload");
        return -1;
    }
    Py_ssize_t n = recv_at(fd, span->buf + HEADER_SIZE, span->len - HEADER_SIZE);
    if (n >= 0) {
        unsigned char *p = (unsigned char *)span->buf;
        uint32_t length = (uint32_t)n;
        p[0] = (unsigned char)(length >> 24);
        p[1] = (unsigned char)(length >> 16);
        p[2] = (unsigned char)(length >> 8);
        p[3] = (unsigned char)length;
    }
    return n;
}

PyDoc_STRVAR(recv_into_doc,
"recv_into(sock, buffer, start) -> int\n\n"
"Receive into buffer[start:] without blocking; the count received (0: the peer's end).");

static PyObject *
sockio_recv_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "recv_into(sock, buffer, start) takes 3 arguments");
        return NULL;
    }
    int fd = fd_of(args[0]);
    if (fd == -2) {
        return NULL;
    }
    Py_ssize_t start;
    if (index_arg(args[2], "start", &start) < 0) {
        return NULL;
    }
    Span span;
    if (span_get(args[1], 1, &span) < 0) {
        return NULL;
    }
    Py_ssize_t n = -1;
    if (start >= span.len) {
        PyErr_SetString(PyExc_ValueError, "start must be inside the buffer");
    } else {
        n = recv_at(fd, span.buf + start, span.len - start);
    }
    span_release(&span);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(recv_frame_doc,
"recv_frame(sock, buffer) -> int\n\n"
"Receive into buffer[4:] without blocking and write the data frame's header (the count,\n"
"big-endian) into buffer[:4]: buffer[:4 + count] is then one frame (count 0: the end frame).");

static PyObject *
sockio_recv_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_frame(sock, buffer) takes 2 arguments");
        return NULL;
    }
    int fd = fd_of(args[0]);
    if (fd == -2) {
        return NULL;
    }
    Span span;
    if (span_get(args[1], 1, &span) < 0) {
        return NULL;
    }
    Py_ssize_t n = recv_framed(fd, &span);
    span_release(&span);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(send_doc,
"send(sock, data, start, end, flags) -> int\n\n"
"Send data[start:end] without blocking (MSG_DONTWAIT | MSG_NOSIGNAL added to flags); the\n"
"count sent.");

static PyObject *
sockio_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "send(sock, data, start, end, flags) takes 5 arguments");
        return NULL;
    }
    int fd = fd_of(args[0]);
    if (fd == -2) {
        return NULL;
    }
    Py_ssize_t start, end;
    if (index_arg(args[2], "start", &start) < 0 || index_arg(args[3], "end", &end) < 0) {
        return NULL;
    }
    long flags = PyLong_AsLong(args[4]);
    if (flags == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (flags < 0 || flags > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "flags must be send()'s flags");
        return NULL;
    }
    Span span;
    if (span_get(args[1], 0, &span) < 0) {
        return NULL;
    }
    Py_ssize_t sent = -1;
    if (start > end || end > span.len) {
        PyErr_SetString(PyExc_ValueError, "start:end must be a range inside the data");
    } else {
        sent = send_at(fd, span.buf + start, end - start, (int)flags);
    }
    span_release(&span);
    return sent < 0 ? NULL : PyLong_FromSsize_t(sent);
}

/* send_at() for the read-and-send calls: the count sent, 0 when the socket is full (no
 * exception: the caller keeps the rest); -1 with an exception set on any other error. */
static Py_ssize_t
send_some(int fd, const char *buf, Py_ssize_t size)
{
    Py_ssize_t n = send_at(fd, buf, size, 0);
    if (n < 0 && PyErr_ExceptionMatches(PyExc_BlockingIOError)) {
        PyErr_Clear(); /* rare: only when the destination is full */
        return 0;
    }
    return n;
}

/* The (src, dst, buffer, ...) arguments of the calls that read and send: both descriptors, and
 * the buffer held writable in *span; -1 with an exception set otherwise. */
static int
read_send_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage,
               int *src, int *dst, Span *span)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", usage, want);
        return -1;
    }
    if ((*src = fd_of(args[0])) == -2 || (*dst = fd_of(args[1])) == -2) {
        return -1;
    }
    return span_get(args[2], 1, span);
}

/* The answer of a call that read n bytes and sent `sent` of `whole` (-1: an error is set):
 * `all_sent` when it all went, else (n, sent). */
static PyObject *
sent_result(Py_ssize_t sent, Py_ssize_t whole, Py_ssize_t all_sent, Py_ssize_t n)
{
    if (sent < 0) {
        return NULL;
    }
    return sent == whole ? PyLong_FromSsize_t(all_sent) : Py_BuildValue("(nn)", n, sent);
}

PyDoc_STRVAR(forward_frame_doc,
"forward_frame(src, dst, buffer) -> int | tuple[int, int]\n\n"
"Receive from the tunnel src into buffer without blocking. When the n bytes read are exactly\n"
"one whole data frame with a payload, send the payload on to dst at once: -n when all of it\n"
"went, (n, sent) when only `sent` bytes did (dst is full). Otherwise n, nothing sent (0: the\n"
"tunnel's end).");

static PyObject *
sockio_forward_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int src, dst;
    Span span;
    if (read_send_args(args, nargs, 3, "forward_frame(src, dst, buffer)", &src, &dst, &span) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (span.len <= HEADER_SIZE) {
        PyErr_SetString(PyExc_ValueError, "the buffer must hold a header and a payload");
        goto done;
    }
    Py_ssize_t n = recv_at(src, span.buf, span.len);
    if (n < 0) {
        goto done;
    }
    const unsigned char *p = (const unsigned char *)span.buf;
    if (n <= HEADER_SIZE || ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                             (uint32_t)p[3]) != (uint64_t)(n - HEADER_SIZE)) {
        result = PyLong_FromSsize_t(n);
        goto done;
    }
    Py_ssize_t length = n - HEADER_SIZE;
    result = sent_result(send_some(dst, span.buf + HEADER_SIZE, length), length, -n, n);
done:
    span_release(&span);
    return result;
}

PyDoc_STRVAR(frame_out_doc,
"frame_out(src, dst, buffer) -> int | tuple[int, int]\n\n"
"Receive from src into buffer[4:] without blocking and write the data frame's header in\n"
"front (recv_frame). When 0 < n < len(buffer) - 4, send the frame buffer[:4 + n] to the\n"
"tunnel dst at once: n when it all went, (n, sent) when only `sent` bytes did (dst is full).\n"
"Otherwise n, nothing sent (0: src's end; a full buffer: the caller decides).");

static PyObject *
sockio_frame_out(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int src, dst;
    Span span;
    if (read_send_args(args, nargs, 3, "frame_out(src, dst, buffer)", &src, &dst, &span) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = recv_framed(src, &span);
    if (n < 0) {
        goto done;
    }
    if (n == 0 || n == span.len - HEADER_SIZE) {
        result = PyLong_FromSsize_t(n);
        goto done;
    }
    result = sent_result(send_some(dst, span.buf, HEADER_SIZE + n), HEADER_SIZE + n, n, n);
done:
    span_release(&span);
    return result;
}

PyDoc_STRVAR(forward_if_same_doc,
"forward_if_same(src, dst, buffer, expected, instead) -> int | tuple[int, int]\n\n"
"Receive from src into buffer without blocking. When the n bytes read are exactly\n"
"`expected`, send `instead` to dst at once: -n when all of it went, (n, sent) when only\n"
"`sent` bytes did (dst is full). Otherwise n, nothing sent (0: src's end).");

static PyObject *
sockio_forward_if_same(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int src, dst;
    Span span, expected, instead;
    if (read_send_args(args, nargs, 5, "forward_if_same(src, dst, buffer, expected, instead)",
                       &src, &dst, &span) < 0) {
        return NULL;
    }
    if (span_get(args[3], 0, &expected) < 0) {
        span_release(&span);
        return NULL;
    }
    if (span_get(args[4], 0, &instead) < 0) {
        span_release(&expected);
        span_release(&span);
        return NULL;
    }
    PyObject *result = NULL;
    if (span.len == 0) {
        PyErr_SetString(PyExc_ValueError, "the buffer must not be empty");
        goto done;
    }
    Py_ssize_t n = recv_at(src, span.buf, span.len);
    if (n < 0) {
        goto done;
    }
    if (n == 0 || n != expected.len || memcmp(span.buf, expected.buf, (size_t)n) != 0) {
        result = PyLong_FromSsize_t(n);
        goto done;
    }
    result = sent_result(send_some(dst, instead.buf, instead.len), instead.len, -n, n);
done:
    span_release(&instead);
    span_release(&expected);
    span_release(&span);
    return result;
}

/* The descriptor of a call's one argument, a socket; -2 with an exception set otherwise. */
static int
socket_arg(PyObject *const *args, Py_ssize_t nargs, const char *usage)
{
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "%s takes 1 argument", usage);
        return -2;
    }
    return fd_of(args[0]);
}

PyDoc_STRVAR(peer_closed_doc,
"peer_closed(sock) -> bool\n\n"
"Whether an idle socket's peer has gone (FIN, RST) or sent bytes it should not have: a\n"
"one-byte MSG_PEEK without blocking. False only when nothing waits to be read (EAGAIN).");

static PyObject *
sockio_peer_closed(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd = socket_arg(args, nargs, "peer_closed(sock)");
    if (fd == -2) {
        return NULL;
    }
    char byte;
    for (;;) {
        ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return NULL;
            }
            continue;
        }
        /* EOF, bytes, or any error but "nothing yet" (a reset, a closed socket): unusable. */
        return PyBool_FromLong(!(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)));
    }
}

PyDoc_STRVAR(accept_doc,
"accept(listener) -> int\n\n"
"Accept one connection from a listening socket: its descriptor, already non-blocking and\n"
"close-on-exec (accept4), or -1 when none is pending. Other errors raise OSError.");

static PyObject *
sockio_accept(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd = socket_arg(args, nargs, "accept(listener)");
    if (fd == -2) {
        return NULL;
    }
    for (;;) {
        int conn = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (conn >= 0) {
            return PyLong_FromLong(conn);
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return PyLong_FromLong(-1);
        }
        if (errno != EINTR) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
}

#define BATCH_MAX 1024 /* arp.net.sockio.MAX_BATCH; arp.net.selector.BATCH is at most this */

/* The entry for `fd` in a list indexed by descriptor (borrowed), or NULL for none. */
static PyObject *
at(PyObject *list, int fd)
{
    if (fd < 0 || fd >= PyList_GET_SIZE(list)) {
        return NULL;
    }
    PyObject *item = PyList_GET_ITEM(list, fd);
    return item == Py_None ? NULL : item;
}

PyDoc_STRVAR(epoll_set_doc,
"epoll_set(epoll, fd, old, new) -> None\n\n"
"Change what epoll watches on fd from the mask `old` to `new` (0: not registered) in one\n"
"epoll_ctl: ADD, MOD or DEL. A descriptor closed while registered is handled as the kernel\n"
"left it: ADD over a stale entry becomes MOD, DEL of a closed one is already done. Other\n"
"errors raise OSError.");

static PyObject *
sockio_epoll_set(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "epoll_set(epoll, fd, old, new) takes 4 arguments");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], epoll_type)) {
        PyErr_Format(PyExc_TypeError, "a select.epoll is required, not %.100s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    Py_ssize_t fd, old, mask;
    if (index_arg(args[1], "fd", &fd) < 0 || index_arg(args[2], "old", &old) < 0 ||
        index_arg(args[3], "new", &mask) < 0) {
        return NULL;
    }
    if (fd > INT_MAX || old > UINT32_MAX || mask > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "fd must be a descriptor and old and new epoll event masks (32 bits)");
        return NULL;
    }
    if (mask == old) {
        Py_RETURN_NONE;
    }
    int epfd = ((EpollHead *)args[0])->epfd;
    struct epoll_event event;
    memset(&event, 0, sizeof(event));
    event.events = (uint32_t)mask;
    event.data.fd = (int)fd;
    int op = mask == 0 ? EPOLL_CTL_DEL : old == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    /* epoll_ctl cannot block: the GIL is kept. */
    if (epoll_ctl(epfd, op, (int)fd, &event) == 0) {
        Py_RETURN_NONE;
    }
    if (op == EPOLL_CTL_ADD && errno == EEXIST &&
        epoll_ctl(epfd, EPOLL_CTL_MOD, (int)fd, &event) == 0) {
        Py_RETURN_NONE; /* a stale entry of a closed descriptor with the same number */
    }
    if (op == EPOLL_CTL_DEL && (errno == EBADF || errno == ENOENT)) {
        Py_RETURN_NONE; /* closed already: the kernel dropped the registration with it */
    }
    return PyErr_SetFromErrno(PyExc_OSError);
}

PyDoc_STRVAR(peer_ip_doc,
"peer_ip(sock) -> str | None\n\n"
"The IP address of a connected IPv4 or IPv6 socket's peer, as text (an IPv6 scope id left\n"
"out); None when it has none (a closed socket, a Unix socket, a peer gone already).");

static PyObject *
sockio_peer_ip(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd = socket_arg(args, nargs, "peer_ip(sock)");
    if (fd == -2) {
        return NULL;
    }
    struct sockaddr_storage address;
    socklen_t length = sizeof(address);
    if (getpeername(fd, (struct sockaddr *)&address, &length) < 0) {
        Py_RETURN_NONE;
    }
    char text[INET6_ADDRSTRLEN];
    size_t length_of_text = 0;
    if (address.ss_family == AF_INET) {
        /* By hand: glibc's inet_ntop formats IPv4 through sprintf (about 2,000 instructions). */
        const unsigned char *octets =
            (const unsigned char *)&((struct sockaddr_in *)&address)->sin_addr;
        for (int i = 0; i < 4; i++) {
            unsigned int octet = octets[i];
            if (octet >= 100) {
                text[length_of_text++] = (char)('0' + octet / 100);
            }
            if (octet >= 10) {
                text[length_of_text++] = (char)('0' + octet / 10 % 10);
            }
            text[length_of_text++] = (char)('0' + octet % 10);
            if (i < 3) {
                text[length_of_text++] = '.';
            }
        }
    } else if (address.ss_family == AF_INET6) {
        if (inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&address)->sin6_addr, text,
                      sizeof(text)) == NULL) {
            Py_RETURN_NONE;
        }
        length_of_text = strlen(text);
    } else {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeASCII(text, (Py_ssize_t)length_of_text, NULL);
}

/* Call a callback (looked up just before, kept alive through the call); report an exception
 * to on_error, except SystemExit and KeyboardInterrupt, which go up. -1: one went up. */
static int
run_callback(PyObject *callback, PyObject *on_error)
{
    Py_INCREF(callback);
    PyObject *result = PyObject_CallNoArgs(callback);
    Py_DECREF(callback);
    if (result != NULL) {
        Py_DECREF(result);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return -1;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    PyObject *reported = PyObject_CallOneArg(on_error, value != NULL ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    if (reported == NULL) {
        return -1;
    }
    Py_DECREF(reported);
    return 0;
}

PyDoc_STRVAR(dispatch_doc,
"dispatch(epoll, timeout_ms, maxevents, readers, writers, loop_keys, on_error)\n\n"
"One epoll_wait (the GIL released only when it may wait), then for each event the reader\n"
"readers[fd] (on EPOLLIN, ERR, HUP), then the writer writers[fd] (on EPOLLOUT, ERR, HUP),\n"
"each looked up just before its call. Returns None when no event came, else the list of\n"
"(loop_keys[fd], mask) for the events of descriptors the loop has registered (loop_keys:\n"
"a list indexed by descriptor, or None). An exception in a callback goes to on_error(exc),\n"
"but SystemExit and KeyboardInterrupt, which are raised (the events left stay ready).");

static PyObject *
sockio_dispatch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "dispatch(epoll, timeout_ms, maxevents, readers, writers, loop_keys, "
                        "on_error) takes 7 arguments");
        return NULL;
    }
    PyObject *readers = args[3], *writers = args[4], *loop_keys = args[5], *on_error = args[6];
    if (!PyList_CheckExact(readers) || !PyList_CheckExact(writers) ||
        (loop_keys != Py_None && !PyList_CheckExact(loop_keys))) {
        PyErr_SetString(PyExc_TypeError, "readers, writers and loop_keys must be lists");
        return NULL;
    }
    long timeout = PyLong_AsLong(args[1]);
    if (timeout == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long maxevents = PyLong_AsLong(args[2]);
    if (maxevents == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (timeout < -1 || timeout > INT_MAX || maxevents < 1 || maxevents > BATCH_MAX) {
        PyErr_SetString(PyExc_ValueError, "timeout_ms must be -1 or more, maxevents 1 to 1024");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], epoll_type)) {
        PyErr_Format(PyExc_TypeError, "a select.epoll is required, not %.100s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    int epfd = ((EpollHead *)args[0])->epfd; /* read per call, as the descriptor of a socket */
    if (epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed epoll object");
        return NULL;
    }
    struct epoll_event events[BATCH_MAX];
    int count;
    if (timeout == 0) {
        count = epoll_wait(epfd, events, (int)maxevents, 0); /* cannot block: GIL kept */
    } else {
        Py_BEGIN_ALLOW_THREADS
        count = epoll_wait(epfd, events, (int)maxevents, (int)timeout);
        Py_END_ALLOW_THREADS
    }
    if (count < 0) {
        if (errno == EINTR) {
            /* A signal: its handler runs now; the caller sees no event and goes back to the
             * loop, which handles it. */
            return PyErr_CheckSignals() < 0 ? NULL : Py_NewRef(Py_None);
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    if (count == 0) {
        Py_RETURN_NONE;
    }
    PyObject *ready = PyList_New(0);
    if (ready == NULL) {
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        int fd = events[i].data.fd;
        uint32_t mask = events[i].events;
        PyObject *callback;
        if (mask & (EPOLLIN | EPOLLERR | EPOLLHUP) && (callback = at(readers, fd)) != NULL &&
            run_callback(callback, on_error) < 0) {
            goto fail;
        }
        if (mask & (EPOLLOUT | EPOLLERR | EPOLLHUP) && (callback = at(writers, fd)) != NULL &&
            run_callback(callback, on_error) < 0) {
            goto fail;
        }
        PyObject *key;
        if (loop_keys != Py_None && (key = at(loop_keys, fd)) != NULL) {
            PyObject *pair = Py_BuildValue("(OI)", key, (unsigned int)mask);
            if (pair == NULL || PyList_Append(ready, pair) < 0) {
                Py_XDECREF(pair);
                goto fail;
            }
            Py_DECREF(pair);
        }
    }
    return ready;
fail:
    Py_DECREF(ready);
    return NULL;
}

static PyMethodDef sockio_methods[] = {
    {"recv_into", (PyCFunction)(void (*)(void))sockio_recv_into, METH_FASTCALL, recv_into_doc},
    {"recv_frame", (PyCFunction)(void (*)(void))sockio_recv_frame, METH_FASTCALL,
     recv_frame_doc},
    {"send", (PyCFunction)(void (*)(void))sockio_send, METH_FASTCALL, send_doc},
    {"forward_frame", (PyCFunction)(void (*)(void))sockio_forward_frame, METH_FASTCALL,
     forward_frame_doc},
    {"frame_out", (PyCFunction)(void (*)(void))sockio_frame_out, METH_FASTCALL, frame_out_doc},
    {"forward_if_same", (PyCFunction)(void (*)(void))sockio_forward_if_same, METH_FASTCALL,
     forward_if_same_doc},
    {"dispatch", (PyCFunction)(void (*)(void))sockio_dispatch, METH_FASTCALL, dispatch_doc},
    {"peer_closed", (PyCFunction)(void (*)(void))sockio_peer_closed, METH_FASTCALL,
     peer_closed_doc},
    {"accept", (PyCFunction)(void (*)(void))sockio_accept, METH_FASTCALL, accept_doc},
    {"epoll_set", (PyCFunction)(void (*)(void))sockio_epoll_set, METH_FASTCALL, epoll_set_doc},
    {"peer_ip", (PyCFunction)(void (*)(void))sockio_peer_ip, METH_FASTCALL, peer_ip_doc},
    {NULL, NULL, 0, NULL},
};

/* The descriptor at the head of `module.name`'s objects must be what fileno() says, for a
 * real one made by calling the type with `args`; else this module must not load. The type is
 * kept (a new reference) in *out. */
static int
check_layout(const char *module_name, const char *name, PyObject *args, PyTypeObject **out)
{
    PyObject *module = PyImport_ImportModule(module_name);
    if (module == NULL) {
        return -1;
    }
    PyObject *type = PyObject_GetAttrString(module, name);
    Py_DECREF(module);
    if (type == NULL) {
        return -1;
    }
    if (!PyType_Check(type) ||
        ((PyTypeObject *)type)->tp_basicsize < (Py_ssize_t)sizeof(SocketHead)) {
        Py_DECREF(type);
        PyErr_Format(PyExc_ImportError, "%s.%s is not the object this module reads",
                     module_name, name);
        return -1;
    }
    PyObject *object = PyObject_Call(type, args, NULL);
    if (object == NULL) {
        Py_DECREF(type);
        return -1;
    }
    PyObject *fileno = PyObject_CallMethod(object, "fileno", NULL);
    long expected = fileno == NULL ? -1 : PyLong_AsLong(fileno);
    Py_XDECREF(fileno);
    /* SocketHead and EpollHead share their layout: an int after the object header. */
    int matches = expected >= 0 && ((SocketHead *)object)->sock_fd == (int)expected;
    PyObject *closed = PyObject_CallMethod(object, "close", NULL);
    Py_XDECREF(closed);
    Py_DECREF(object);
    if (PyErr_Occurred()) {
        Py_DECREF(type);
        return -1;
    }
    if (!matches) {
        Py_DECREF(type);
        PyErr_Format(PyExc_ImportError,
                     "%s.%s objects do not hold their descriptor where this module reads it",
                     module_name, name);
        return -1;
    }
    *out = (PyTypeObject *)type; /* kept for the interpreter's life */
    return 0;
}

static struct PyModuleDef sockio_module = {
    PyModuleDef_HEAD_INIT,
    "arp.net._sockio",
    "The data path's non-blocking socket calls (see arp/net/sockio.py).",
    -1,
    sockio_methods,
};

PyMODINIT_FUNC
PyInit__sockio(void)
{
    if (socket_type == NULL) {
        PyObject *args = Py_BuildValue("(iii)", AF_UNIX, SOCK_STREAM, 0);
        int failed = args == NULL || check_layout("_socket", "socket", args, &socket_type) < 0;
        Py_XDECREF(args);
        if (failed) {
            return NULL;
        }
    }
    if (epoll_type == NULL) {
        PyObject *args = PyTuple_New(0);
        int failed = args == NULL || check_layout("select", "epoll", args, &epoll_type) < 0;
        Py_XDECREF(args);
        if (failed) {
            return NULL;
        }
    }
    return PyModule_Create(&sockio_module);
}
