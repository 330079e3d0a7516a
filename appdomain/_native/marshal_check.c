/* marshal_problem(): walk CPython marshal bytes before marshal.loads() reads them.
 *
 * CPython's marshal trusts the lengths it reads: a tuple declaring 2**31 items makes it
 * allocate 16 GiB before it looks for them.  A link between processes (appdomain/_hosts)
 * checks every frame first; in Python that walk costs more than the rest of a small
 * call's decoding (~3 us of ~4 for a call frame), here ~0.1 us.  It is the same walk as
 * _hosts/_frames.py's check_marshal(), which stays as the fallback and the reference:
 * the same codes, limits, reasons and positions (tests compare the two).  With nodes on
 * it also does what _check_nested() does after loading: it checks the bytes of each
 * MARSHAL node of appdomain.marshal (a 2-tuple of 27 and bytes) as marshal of builtin
 * containers; frames are marshal format 2, which has no references, so none is allowed
 * (a reference could hide such a node's bytes from the walk).
 */
#include "native.h"
#include <marshal.h>

#define MAX_DEPTH 1000
#define DICT_LEVEL (-1)   /* a dict's level: key, value pairs until a NULL ('0') */

/* Whether the number at data (a value of type code, its bytes after the code) equals 27, as
 * Python's == sees it: the int 27 ('i', or a one-digit 'l'), 27.0 ('g'), 27+0j ('y'). */
static int
is_marshal_tag(int code, const unsigned char *data)
{
    if (code == 'i') {
        return data[0] == 27 && data[1] == 0 && data[2] == 0 && data[3] == 0;
    }
    if (code == 'l') {
        return data[0] == 1 && data[1] == 0 && data[2] == 0 && data[3] == 0
               && data[4] == 27 && data[5] == 0;
    }
    if (code == 'g' || code == 'y') {
        /* marshal writes IEEE doubles little-endian (a NaN is never 27: no error here) */
        double real = PyFloat_Unpack8((const char *)data, 1);
        double imag = code == 'y' ? PyFloat_Unpack8((const char *)data + 8, 1) : 0.0;
        return real == 27.0 && imag == 0.0;
    }
    return 0;
}

enum { NODE_NO = 0, NODE_FIRST, NODE_TAGGED, NODE_DONE };

/* Walk data[0:end]; return NULL when marshal.loads may read it, else the reason (in
 * message, or a literal), with *at the position.  nodes: also check, as containers=1
 * walks, the bytes of every MARSHAL node (a 2-tuple (27, bytes)) met on the way, and
 * set *in_node when the reason is theirs. */
static const char *
walk(const unsigned char *data, Py_ssize_t end, int containers, int nodes,
     Py_ssize_t *at, int *in_node, char *message, size_t message_size)
{
    Py_ssize_t pos = 0;
    long long refs = 0;
    long long levels[MAX_DEPTH + 2];
    unsigned char node[MAX_DEPTH + 2];   /* NODE_*: a level that may be a MARSHAL node */
    int depth = 1;
    levels[0] = 1;
    node[0] = NODE_NO;
    const char *reason = NULL;

#define FAIL(why) do { reason = (why); goto done; } while (0)
#define INT32(into) do {                                                        \
        if (end - pos < 4) FAIL("it ends inside a length");                     \
        (into) = (int32_t)((uint32_t)data[pos] | ((uint32_t)data[pos + 1] << 8) \
                 | ((uint32_t)data[pos + 2] << 16) | ((uint32_t)data[pos + 3] << 24)); \
        pos += 4;                                                               \
    } while (0)

    while (depth > 0) {
        if (levels[depth - 1] == 0) {
            depth--;
            continue;
        }
        if (pos >= end) {
            FAIL("it ends inside a value");
        }
        int code = data[pos] & 0x7F;
        if (data[pos] & 0x80) {
            if (nodes) {
                /* A reference could make a MARSHAL node of values checked elsewhere. */
                FAIL("a reference flag (link frames are marshal format 2, which writes none)");
            }
            refs++;
        }
        pos++;
        int level = depth - 1;
        if (levels[level] == DICT_LEVEL) {
            if (code == '0') {
                depth--;
                continue;
            }
        }
        else {
            levels[level]--;
        }
        Py_ssize_t value_at = pos;   /* where this value's bytes start, after its code */
        long long size;
        int32_t n;
        switch (code) {
        case 'N': case 'T': case 'F': case '.':
            size = 0;
            break;
        case 'i':
            size = 4;
            break;
        case 'g':
            size = 8;
            break;
        case 'y':
            size = 16;
            break;
        case 's': case 'u': case 'a': case 't': case 'A':
            INT32(n);
            size = n;
            value_at = pos;
            break;
        case 'z': case 'Z':
            if (pos >= end) {
                FAIL("it ends inside a length");
            }
            size = data[pos];
            pos++;
            break;
        case 'l':
            INT32(n);
            size = 2 * llabs((long long)n);
            break;
        case 'r':
            INT32(n);
            if (!(0 <= n && n < refs)) {
                snprintf(message, message_size, "a back-reference to object %ld of %lld",
                         (long)n, refs);
                FAIL(message);
            }
            continue;
        case '{':
            if (!containers) {
                goto bad_code;
            }
            levels[depth] = DICT_LEVEL;
            node[depth++] = NODE_NO;
            size = 0;
            break;
        case '[': case '<': case '>':
            if (!containers) {
                goto bad_code;
            }
            /* fall through: counted like a tuple */
        case '(': case ')': {
            long long count;
            if (code == ')') {
                if (pos >= end) {
                    FAIL("it ends inside a length");
                }
                count = data[pos];
                pos++;
            }
            else {
                INT32(n);
                count = n;
            }
            if (!(0 <= count && count <= end - pos)) {
                snprintf(message, message_size, "a container of %lld items in %lld bytes",
                         count, (long long)(end - pos));
                FAIL(message);
            }
            if (nodes) {
                node[level] = NODE_DONE;
            }
            levels[depth] = count;
            node[depth++] = (nodes && count == 2 && (code == '(' || code == ')'))
                            ? NODE_FIRST : NODE_NO;
            size = 0;
            break;
        }
        default:
        bad_code:
            /* The same words as Python's f"{code!r} ({chr(code)!r})" for these codes. */
            if (code == '\'') {
                snprintf(message, message_size,
                         "type code %d (\"'\") is not one a link carries", code);
            }
            else if (code == '\\') {
                snprintf(message, message_size,
                         "type code %d ('\\\\') is not one a link carries", code);
            }
            else if (code >= 0x20 && code < 0x7F) {
                snprintf(message, message_size,
                         "type code %d ('%c') is not one a link carries", code, code);
            }
            else {
                const char *named = code == '\t' ? "\\t" : code == '\n' ? "\\n"
                                    : code == '\r' ? "\\r" : NULL;
                if (named != NULL) {
                    snprintf(message, message_size,
                             "type code %d ('%s') is not one a link carries", code, named);
                }
                else {
                    snprintf(message, message_size,
                             "type code %d ('\\x%02x') is not one a link carries", code, code);
                }
            }
            FAIL(message);
        }
        if (!(0 <= size && size <= end - pos)) {
            snprintf(message, message_size, "a value of %lld bytes in %lld", size,
                     (long long)(end - pos));
            FAIL(message);
        }
        if (node[level] == NODE_FIRST) {
            node[level] = is_marshal_tag(code, data + value_at) ? NODE_TAGGED : NODE_DONE;
        }
        else if (node[level] == NODE_TAGGED) {
            node[level] = NODE_DONE;
            if (code == 's') {   /* a MARSHAL node: its bytes are CPython marshal too */
                const char *inner = walk(data + value_at, size, 1, 0, at, in_node,
                                         message, message_size);
                if (inner != NULL) {
                    *in_node = 1;
                    return inner;
                }
            }
        }
        pos += size;
        if (depth > MAX_DEPTH) {
            snprintf(message, message_size, "it nests more than %d levels", MAX_DEPTH);
            FAIL(message);
        }
    }
    if (pos != end) {
        snprintf(message, message_size, "%lld bytes follow the value", (long long)(end - pos));
        FAIL(message);
    }
done:
    *at = pos;
    return reason;
#undef FAIL
#undef INT32
}

/* marshal_problem(data, start, containers, nodes=False) -> None, or (reason, position from
 * start, whether the reason is a MARSHAL node's, whose bytes the position is in). */
PyObject *
appdomain_marshal_problem(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 4) {
        PyErr_Format(PyExc_TypeError, "marshal_problem() takes 3 or 4 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int containers = PyObject_IsTrue(args[2]);
    if (containers < 0) {
        return NULL;
    }
    int nodes = nargs == 4 ? PyObject_IsTrue(args[3]) : 0;
    if (nodes < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (start < 0 || start > view.len) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "start must be within the data (got %zd of %zd)",
                     start, view.len);
        return NULL;
    }
    char message[96];
    Py_ssize_t at = 0;
    int in_node = 0;
    const char *reason = walk((const unsigned char *)view.buf + start, view.len - start,
                              containers, nodes, &at, &in_node, message, sizeof(message));
    PyBuffer_Release(&view);
    if (reason == NULL) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(snO)", reason, at, in_node ? Py_True : Py_False);
}

/* decode_frame(data, magic, version, shapes) -> (kind, body), or None for any frame that
 * is not valid, which the caller then decodes in Python to say what is wrong with it.
 * shapes: {kind: (field count, ((index, type), ...))}, _hosts/_frames.py's table. */
PyObject *
appdomain_decode_frame(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "decode_frame() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    long magic = PyLong_AsLong(args[1]);
    long version = PyLong_AsLong(args[2]);
    if ((magic == -1 || version == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "decode_frame() shapes must be a dict");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    PyObject *kind = NULL, *body = NULL, *result = NULL;
    if (view.len < 4 || data[0] != magic || data[1] != version) {
        goto slow;
    }
    kind = PyLong_FromLong(data[2]);
    if (kind == NULL) {
        goto error;
    }
    PyObject *shape = PyDict_GetItemWithError(args[3], kind);   /* borrowed */
    if (shape == NULL) {
        if (PyErr_Occurred()) {
            goto error;
        }
        goto slow;
    }
    if (!PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != 2
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(shape, 1))) {
        PyErr_SetString(PyExc_TypeError, "decode_frame() shapes must map kinds to (count, fields)");
        goto error;
    }
    Py_ssize_t count = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, 0));
    if (count == -1 && PyErr_Occurred()) {
        goto error;
    }
    char message[96];
    Py_ssize_t at = 0;
    int in_node = 0;
    if (walk(data + 3, view.len - 3, 0, 1, &at, &in_node, message, sizeof(message)) != NULL) {
        goto slow;
    }
    body = PyMarshal_ReadObjectFromString((const char *)data + 3, view.len - 3);
    if (body == NULL) {
        PyErr_Clear();   /* the Python decoder reads it again and says why */
        goto slow;
    }
    if (!PyTuple_CheckExact(body) || PyTuple_GET_SIZE(body) != count) {
        goto slow;
    }
    PyObject *fields = PyTuple_GET_ITEM(shape, 1);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2) {
            PyErr_SetString(PyExc_TypeError, "decode_frame() fields must be (index, type)");
            goto error;
        }
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(field, 0));
        if (index == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (index < 0 || index >= count
            || (PyObject *)Py_TYPE(PyTuple_GET_ITEM(body, index)) != PyTuple_GET_ITEM(field, 1)) {
            goto slow;
        }
    }
    result = PyTuple_Pack(2, kind, body);
    goto done;
slow:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(kind);
    Py_XDECREF(body);
    PyBuffer_Release(&view);
    return result;
}
