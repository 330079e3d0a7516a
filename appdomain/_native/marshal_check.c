/* marshal_problem(): walk CPython marshal bytes before marshal.loads() reads them.
 *
 * CPython's marshal trusts the lengths it reads: a tuple declaring 2**31 items makes it
 * allocate 16 GiB before it looks for them.  A link between processes (appdomain/_hosts)
 * checks every frame first; in Python that walk costs more than the rest of a small
 * call's decoding (~3 us of ~4 for a call frame), here ~0.1 us.  It is the same walk as
 * _hosts/_frames.py's check_marshal(), which stays as the fallback and the reference:
 * the same codes, limits, reasons and positions (tests compare the two).
 */
#include "native.h"

#define MAX_DEPTH 1000
#define DICT_LEVEL (-1)   /* a dict's level: key, value pairs until a NULL ('0') */

static PyObject *
problem(const char *reason, Py_ssize_t pos)
{
    return Py_BuildValue("(sn)", reason, pos);
}

/* marshal_problem(data, start, containers) -> None, or (reason, position from start). */
PyObject *
appdomain_marshal_problem(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "marshal_problem() takes 3 arguments (%zd given)", nargs);
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
    const unsigned char *data = (const unsigned char *)view.buf + start;
    const Py_ssize_t end = view.len - start;
    Py_ssize_t pos = 0;
    long long refs = 0;
    long long levels[MAX_DEPTH + 2];
    int depth = 1;
    levels[0] = 1;
    char message[96];
    PyObject *result = NULL;

#define FAIL(reason) do { result = problem((reason), pos); goto done; } while (0)
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
            refs++;
        }
        pos++;
        if (levels[depth - 1] == DICT_LEVEL) {
            if (code == '0') {
                depth--;
                continue;
            }
        }
        else {
            levels[depth - 1]--;
        }
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
                snprintf(message, sizeof(message), "a back-reference to object %ld of %lld",
                         (long)n, refs);
                FAIL(message);
            }
            continue;
        case '{':
            if (!containers) {
                goto bad_code;
            }
            levels[depth++] = DICT_LEVEL;
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
                snprintf(message, sizeof(message), "a container of %lld items in %lld bytes",
                         count, (long long)(end - pos));
                FAIL(message);
            }
            levels[depth++] = count;
            size = 0;
            break;
        }
        default:
        bad_code:
            /* The same words as Python's f"{code!r} ({chr(code)!r})" for these codes. */
            if (code == '\'' ) {
                snprintf(message, sizeof(message),
                         "type code %d (\"'\") is not one a link carries", code);
            }
            else if (code == '\\') {
                snprintf(message, sizeof(message),
                         "type code %d ('\\\\') is not one a link carries", code);
            }
            else if (code >= 0x20 && code < 0x7F) {
                snprintf(message, sizeof(message),
                         "type code %d ('%c') is not one a link carries", code, code);
            }
            else {
                const char *named = code == '\t' ? "\\t" : code == '\n' ? "\\n"
                                    : code == '\r' ? "\\r" : NULL;
                if (named != NULL) {
                    snprintf(message, sizeof(message),
                             "type code %d ('%s') is not one a link carries", code, named);
                }
                else {
                    snprintf(message, sizeof(message),
                             "type code %d ('\\x%02x') is not one a link carries", code, code);
                }
            }
            FAIL(message);
        }
        if (!(0 <= size && size <= end - pos)) {
            snprintf(message, sizeof(message), "a value of %lld bytes in %lld", size,
                     (long long)(end - pos));
            FAIL(message);
        }
        pos += size;
        if (depth > MAX_DEPTH) {
            snprintf(message, sizeof(message), "it nests more than %d levels", MAX_DEPTH);
            FAIL(message);
        }
    }
    if (pos != end) {
        snprintf(message, sizeof(message), "%lld bytes follow the value", (long long)(end - pos));
        FAIL(message);
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&view);
    return result;
#undef FAIL
#undef INT32
}
