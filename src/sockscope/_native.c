/* sockscope._native: the two hot loops of `sockscope ls`, in C.
 *
 * inet_sockets: inet_diag_msg records -> Socket named tuples (decoding, a whole reply chunk a call);
 * table_text:   columns of cells (and inet endpoints) -> the aligned table as one string.
 * fd_sockets:   one process's /proc/PID/fd directory -> (inode, pid, fd) of its sockets (`ls -p`).
 *
 * Each has a pure-Python twin (diag.decode_inet, render.table_text, owners.read_task) that gives the same
 * result; the tests compare them. Anything unusual
 * (an unknown family or state, a cell that is not text or a number) makes these functions
 * return None so the caller takes the Python path, which also owns every error message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NLMSG_HDR 16
#define INET_MSG 72

typedef struct {
    int family;
    unsigned char raw[16];
    PyObject *text;
} AddrSlot;

#define ADDR_SLOTS 256

static PyObject *address_text(AddrSlot *slots, int family, const unsigned char *raw) {
    size_t size = family == AF_INET ? 4 : 16;
    uint32_t hash = 2166136261u;
    for (size_t i = 0; i < size; i++) hash = (hash ^ raw[i]) * 16777619u;
    AddrSlot *slot = &slots[hash % ADDR_SLOTS];
    if (slot->text != NULL && slot->family == family && memcmp(slot->raw, raw, size) == 0) {
        Py_INCREF(slot->text);
        return slot->text;
    }
    char buf[INET6_ADDRSTRLEN];
    if (inet_ntop(family, raw, buf, sizeof buf) == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    PyObject *text = PyUnicode_FromString(buf);
    if (text == NULL) return NULL;
    Py_XDECREF(slot->text);
    slot->family = family;
    memcpy(slot->raw, raw, size);
    slot->text = text;
    Py_INCREF(text);
    return text;
}

static void clear_slots(AddrSlot *slots) {
    for (int i = 0; i < ADDR_SLOTS; i++) Py_CLEAR(slots[i].text);
}

static PyObject *new_record(PyTypeObject *type, Py_ssize_t size) {
    return type->tp_alloc(type, size);
}

static PyObject *endpoint(PyTypeObject *type, PyObject *address, unsigned port) {
    PyObject *end = new_record(type, 2);
    if (end == NULL) {
        Py_DECREF(address);
        return NULL;
    }
    PyObject *number = PyLong_FromUnsignedLong(port);
    if (number == NULL) {
        Py_DECREF(address);
        Py_DECREF(end);
        return NULL;
    }
    PyTuple_SET_ITEM(end, 0, address);
    PyTuple_SET_ITEM(end, 1, number);
    return end;
}

static uint32_t u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#define INET_DIAG_SKV6ONLY 11
#define SOCKET_FIELDS 15

/* INET_DIAG_SKV6ONLY of one message (m: after the netlink header, size: the rest of it):
 * 0 or 1, 2 when absent, -1 when the attributes are malformed (diag.attributes raises). Like
 * the Python twin, the last attribute of the type wins. Only inet6 sockets that listen or
 * are closed (TCP_LISTEN 10, TCP_CLOSE 7) carry it. */
static int v6only_of(const unsigned char *m, Py_ssize_t size) {
    int found = 2;
    Py_ssize_t at = INET_MSG;
    while (at + 4 <= size) {
        uint16_t len, type;
        memcpy(&len, m + at, 2);
        memcpy(&type, m + at + 2, 2);
        if (len < 4 || at + len > size) return -1;
        if ((type & 0x3FFF) == INET_DIAG_SKV6ONLY) found = len > 4 ? m[at + 4] != 0 : 2;
        at += (len + 3) & ~3;
    }
    return found;
}

static int wants_v6only(const unsigned char *m) { return m[0] == AF_INET6 && (m[1] == 7 || m[1] == 10); }

typedef struct {
    Py_ssize_t offset, length, count;
    int family;
} Run;

/* The runs of a spans list [(offset, length, count), ...], checked against the chunk: every
 * message of a run has the run's family (inet or inet6), a known state and sound attributes
 * where v6only is read. Gives the number of messages, -1 to take the Python path. */
static Py_ssize_t check_runs(PyObject *spans, const Py_buffer *chunk, Py_ssize_t nstates, Run *runs) {
    Py_ssize_t total = 0, n = PyList_GET_SIZE(spans);
    for (Py_ssize_t k = 0; k < n; k++) {
        Run *run = &runs[k];
        PyObject *span = PyList_GET_ITEM(spans, k);
        if (!PyTuple_Check(span) || !PyArg_ParseTuple(span, "nnn", &run->offset, &run->length, &run->count)) {
            PyErr_Clear();
            return -1;
        }
        if (run->length < NLMSG_HDR + INET_MSG || run->count < 0 || run->offset < 0 || run->count > chunk->len ||
            run->offset + run->length * run->count > chunk->len)
            return -1;
        const unsigned char *base = (const unsigned char *)chunk->buf + run->offset;
        run->family = run->count ? base[NLMSG_HDR] : AF_INET;
        if (run->family != AF_INET && run->family != AF_INET6) return -1;
        for (Py_ssize_t i = 0; i < run->count; i++) {
            const unsigned char *m = base + i * run->length + NLMSG_HDR;
            if (m[0] != run->family || m[1] >= nstates) return -1;
            if (wants_v6only(m) && v6only_of(m, run->length - NLMSG_HDR) < 0) return -1;
        }
        total += run->count;
    }
    return total;
}

/* inet_sockets(chunk, spans, netid, inet, inet6, states, Endpoint, Socket, netns, devices)
 * -> list[Socket] | None: every message of the spans, decoded in one call (replies where
 * sockets of several states alternate come as many short runs). devices(ifindex) names the
 * interface a socket is bound to (ifindex != 0). */
static PyObject *inet_sockets(PyObject *self, PyObject *args) {
    Py_buffer chunk;
    PyObject *spans, *netid, *fam_inet, *fam_inet6, *states, *netns, *devices;
    PyTypeObject *endpoint_type, *socket_type;
    if (!PyArg_ParseTuple(args, "y*O!OOOO!O!O!OO", &chunk, &PyList_Type, &spans, &netid, &fam_inet, &fam_inet6, &PyTuple_Type, &states,
                          &PyType_Type, &endpoint_type, &PyType_Type, &socket_type, &netns, &devices))
        return NULL;
    PyObject *out = NULL;
    AddrSlot slots[ADDR_SLOTS];
    memset(slots, 0, sizeof slots);
    Py_ssize_t nruns = PyList_GET_SIZE(spans);
    Run *runs = PyMem_Malloc((size_t)(nruns ? nruns : 1) * sizeof(Run));
    if (runs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = check_runs(spans, &chunk, PyTuple_GET_SIZE(states), runs);
    if (total < 0) goto fallback;
    out = PyList_New(total);
    if (out == NULL) goto done;
    Py_ssize_t row = 0;
    for (Py_ssize_t k = 0; k < nruns; k++) {
        const Run *run = &runs[k];
        const unsigned char *base = (const unsigned char *)chunk.buf + run->offset;
        int family = run->family;
        PyObject *fam = family == AF_INET ? fam_inet : fam_inet6;
        for (Py_ssize_t i = 0; i < run->count; i++) {
            const unsigned char *m = base + i * run->length + NLMSG_HDR;
            unsigned sport = (unsigned)m[4] << 8 | m[5], dport = (unsigned)m[6] << 8 | m[7];
            PyObject *src = address_text(slots, family, m + 8);
            if (src == NULL) goto error;
            PyObject *local = endpoint(endpoint_type, src, sport);
            if (local == NULL) goto error;
            PyObject *dst = address_text(slots, family, m + 24);
            if (dst == NULL) {
                Py_DECREF(local);
                goto error;
            }
            PyObject *peer = endpoint(endpoint_type, dst, dport);
            if (peer == NULL) {
                Py_DECREF(local);
                goto error;
            }
            PyObject *rq = PyLong_FromUnsignedLong(u32(m + 56));
            PyObject *wq = PyLong_FromUnsignedLong(u32(m + 60));
            PyObject *uid = PyLong_FromUnsignedLong(u32(m + 64));
            PyObject *inode = PyLong_FromUnsignedLong(u32(m + 68));
            /* the cookie is two u32 words, the low one first (sock_diag_save_cookie) */
            PyObject *cookie = PyLong_FromUnsignedLongLong((unsigned long long)u32(m + 44) | (unsigned long long)u32(m + 48) << 32);
            PyObject *sock = new_record(socket_type, SOCKET_FIELDS);
            uint32_t ifindex = u32(m + 40);
            PyObject *device = ifindex ? PyObject_CallFunction(devices, "k", (unsigned long)ifindex) : Py_NewRef(Py_None);
            if (rq == NULL || wq == NULL || uid == NULL || inode == NULL || cookie == NULL || sock == NULL || device == NULL) {
                Py_XDECREF(device);
                Py_XDECREF(cookie);
                Py_XDECREF(rq);
                Py_XDECREF(wq);
                Py_XDECREF(uid);
                Py_XDECREF(inode);
                Py_XDECREF(sock);
                Py_DECREF(local);
                Py_DECREF(peer);
                goto error;
            }
            PyObject *state = PyTuple_GET_ITEM(states, m[1]);
            int v6only = wants_v6only(m) ? v6only_of(m, run->length - NLMSG_HDR) : 2;
            PyTuple_SET_ITEM(sock, 0, Py_NewRef(netid));
            PyTuple_SET_ITEM(sock, 1, Py_NewRef(fam));
            PyTuple_SET_ITEM(sock, 2, Py_NewRef(state));
            PyTuple_SET_ITEM(sock, 3, rq);
            PyTuple_SET_ITEM(sock, 4, wq);
            PyTuple_SET_ITEM(sock, 5, local);
            PyTuple_SET_ITEM(sock, 6, peer);
            PyTuple_SET_ITEM(sock, 7, inode);
            PyTuple_SET_ITEM(sock, 8, uid);
            PyTuple_SET_ITEM(sock, 9, Py_NewRef(netns));
            PyTuple_SET_ITEM(sock, 10, Py_NewRef(Py_None));
            PyTuple_SET_ITEM(sock, 11, device);
            PyTuple_SET_ITEM(sock, 12, Py_NewRef(v6only == 2 ? Py_None : v6only ? Py_True : Py_False));
            PyTuple_SET_ITEM(sock, 13, cookie);
            PyTuple_SET_ITEM(sock, 14, Py_NewRef(Py_None));
            PyList_SET_ITEM(out, row++, sock);
        }
    }
    goto done;
error:
    Py_CLEAR(out);
    goto done;
fallback:
    out = Py_NewRef(Py_None);
done:
    PyMem_Free(runs);
    clear_slots(slots);
    PyBuffer_Release(&chunk);
    return out;
}

/* ------------------------------------------------------------------ table_text */

typedef struct {
    char *data;
    size_t size, cap;
} Buf;

static int buf_grow(Buf *b, size_t more) {
    if (b->size + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->size + more) cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const char *s, size_t n) {
    if (buf_grow(b, n)) return -1;
    memcpy(b->data + b->size, s, n);
    b->size += n;
    return 0;
}

static int buf_spaces(Buf *b, Py_ssize_t n) {
    if (n <= 0) return 0;
    if (buf_grow(b, (size_t)n)) return -1;
    memset(b->data + b->size, ' ', (size_t)n);
    b->size += (size_t)n;
    return 0;
}

/* A cell's UTF-8 bytes (lone surrogates pass through) and its width in code points. */
typedef struct {
    const char *s;
    Py_ssize_t n, width;
    PyObject *keep; /* an encoded copy to release, if one was made */
    char digits[24];
} Cell;

/* Write v in decimal to out (at least 21 bytes); give the length. */
static Py_ssize_t decimal(long long v, char *out) {
    char tmp[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    Py_ssize_t len = 0;
    if (v < 0) out[len++] = '-';
    while (n) out[len++] = tmp[--n];
    return len;
}

static int cell_of(PyObject *obj, Cell *c) {
    c->keep = NULL;
    if (PyUnicode_Check(obj)) {
        c->width = PyUnicode_GET_LENGTH(obj);
        if (PyUnicode_IS_ASCII(obj)) {
            c->s = (const char *)PyUnicode_DATA(obj);
            c->n = c->width;
            return 0;
        }
        c->keep = PyUnicode_AsEncodedString(obj, "utf-8", "surrogatepass");
        if (c->keep == NULL) return -1;
        c->s = PyBytes_AS_STRING(c->keep);
        c->n = PyBytes_GET_SIZE(c->keep);
        return 0;
    }
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 1;
        }
        c->n = c->width = decimal(v, c->digits);
        c->s = c->digits;
        return 0;
    }
    return 1;
}

/* One column: every cell is parts[0][r] followed by parts[1][r] (when parts[1] is set);
 * the objects are borrowed (from the caller's lists, or from `hosts`/`ports` caches). */
typedef struct {
    PyObject **parts[2];
    Py_ssize_t width;
    int right;
    int owners; /* cells are tuples of Owner (pid, name, fd, user), drawn name(pid=P,fd=F,user=U),... */
} Column;

/* Measure (b == NULL) or draw an owners cell; 1: not an owners tuple (take the Python path). */
static int owners_cell(PyObject *owners, Buf *b, Py_ssize_t *width) {
    *width = 0;
    if (owners == Py_None) return 0;
    if (!PyTuple_Check(owners)) return 1;
    Py_ssize_t n = PyTuple_GET_SIZE(owners);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *owner = PyTuple_GET_ITEM(owners, i);
        if (!PyTuple_Check(owner) || PyTuple_GET_SIZE(owner) != 4) return 1;
        Cell parts[4];
        for (int k = 0; k < 4; k++) {
            PyObject *item = PyTuple_GET_ITEM(owner, k);
            int bad = (k == 0 || k == 2) ? !PyLong_CheckExact(item) : !PyUnicode_Check(item);
            int got = bad ? 1 : cell_of(item, &parts[k]);
            if (got != 0) {
                for (int j = 0; j < k; j++) Py_XDECREF(parts[j].keep);
                return got;
            }
        }
        *width += (i ? 1 : 0) + parts[1].width + 5 + parts[0].width + 4 + parts[2].width + 6 + parts[3].width + 1;
        int failed = 0;
        if (b != NULL)
            failed = (i && buf_put(b, ",", 1)) || buf_put(b, parts[1].s, (size_t)parts[1].n) || buf_put(b, "(pid=", 5) ||
                     buf_put(b, parts[0].s, (size_t)parts[0].n) || buf_put(b, ",fd=", 4) || buf_put(b, parts[2].s, (size_t)parts[2].n) ||
                     buf_put(b, ",user=", 6) || buf_put(b, parts[3].s, (size_t)parts[3].n) || buf_put(b, ")", 1);
        for (int k = 0; k < 4; k++) Py_XDECREF(parts[k].keep);
        if (failed) return -1;
    }
    return 0;
}

/* An inet endpoint column given as (sockets, index, hosts, names, star_zero, special): cells
 * are "addr:" (or "[v6]:") from the `hosts` cache, or from `special` (row -> text) for the
 * rows it has, and the port's text (a service name from `names`, "*" for port 0 when
 * star_zero, else the number). 0: done, 1: not such a column. */
static int inet_column(PyObject *spec, Py_ssize_t nrow, Column *col, PyObject **ports) {
    PyObject *sockets, *hosts, *names, *special;
    Py_ssize_t index;
    int star_zero;
    if (!PyArg_ParseTuple(spec, "O!nO!O!pO!", &PyList_Type, &sockets, &index, &PyDict_Type, &hosts, &PyDict_Type, &names, &star_zero,
                          &PyDict_Type, &special)) {
        PyErr_Clear();
        return 1;
    }
    int any_special = PyDict_GET_SIZE(special) > 0;
    if (PyList_GET_SIZE(sockets) != nrow) return 1;
    for (Py_ssize_t r = 0; r < nrow; r++) {
        PyObject *sock = PyList_GET_ITEM(sockets, r);
        if (!PyTuple_Check(sock) || PyTuple_GET_SIZE(sock) <= index) return 1;
        PyObject *end = PyTuple_GET_ITEM(sock, index);
        if (!PyTuple_Check(end) || PyTuple_GET_SIZE(end) != 2) return 1;
        PyObject *address = PyTuple_GET_ITEM(end, 0), *number = PyTuple_GET_ITEM(end, 1);
        if (!PyUnicode_CheckExact(address) || !PyLong_CheckExact(number)) return 1;
        long port = PyLong_AsLong(number);
        if (port < 0 || port > 65535) {
            PyErr_Clear();
            return 1;
        }
        PyObject *host = PyDict_GetItemWithError(hosts, address);
        if (host == NULL) {
            if (PyErr_Occurred()) return -1;
            Py_UCS4 colon = ':';
            int v6 = PyUnicode_FindChar(address, colon, 0, PyUnicode_GET_LENGTH(address), 1) >= 0;
            PyObject *made = v6 ? PyUnicode_FromFormat("[%U]:", address) : PyUnicode_FromFormat("%U:", address);
            if (made == NULL) return -1;
            int failed = PyDict_SetItem(hosts, address, made);
            Py_DECREF(made);
            if (failed) return -1;
            host = PyDict_GetItemWithError(hosts, address); /* the dict holds it now */
            if (host == NULL) return -1;
        }
        if (any_special) {
            PyObject *row = PyLong_FromSsize_t(r);
            if (row == NULL) return -1;
            PyObject *head = PyDict_GetItemWithError(special, row);
            Py_DECREF(row);
            if (head == NULL && PyErr_Occurred()) return -1;
            if (head != NULL) {
                if (!PyUnicode_Check(head)) return 1;
                host = head; /* borrowed: the dict holds it */
            }
        }
        PyObject **text = &ports[(star_zero ? 65536 : 0) + port];
        if (*text == NULL) {
            PyObject *name = PyDict_GetItemWithError(names, number);
            if (name == NULL && PyErr_Occurred()) return -1;
            if (star_zero && port == 0)
                *text = PyUnicode_FromString("*");
            else if (name != NULL && PyUnicode_Check(name) && PyUnicode_GET_LENGTH(name) > 0)
                *text = Py_NewRef(name);
            else
                *text = Py_NewRef(number); /* drawn as digits */
            if (*text == NULL) return -1;
        }
        col->parts[0][r] = host;
        col->parts[1][r] = *text;
    }
    return 0;
}

static int put_cell(Buf *b, Column *col, Py_ssize_t r, Py_ssize_t width) {
    if (col->owners) {
        Py_ssize_t used;
        if (col->right) { /* measure first to pad on the left */
            if (owners_cell(col->parts[0][r], NULL, &used) != 0 || buf_spaces(b, width - used)) return -1;
        }
        if (owners_cell(col->parts[0][r], b, &used) != 0) return -1;
        return col->right ? 0 : buf_spaces(b, width - used);
    }
    Cell cells[2];
    Py_ssize_t used = 0;
    int nparts = col->parts[1] ? 2 : 1;
    for (int k = 0; k < nparts; k++) {
        if (cell_of(col->parts[k][r], &cells[k]) != 0) {
            for (int j = 0; j < k; j++) Py_XDECREF(cells[j].keep);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "table cell changed while drawing");
            return -1;
        }
        used += cells[k].width;
    }
    int failed = col->right && buf_spaces(b, width - used);
    for (int k = 0; k < nparts && !failed; k++) failed = buf_put(b, cells[k].s, (size_t)cells[k].n);
    if (!failed && !col->right) failed = buf_spaces(b, width - used);
    for (int k = 0; k < nparts; k++) Py_XDECREF(cells[k].keep);
    return failed ? -1 : 0;
}

/* table_text(titles, columns, right, header) -> str | None
 * A column is a list of str (or str subclass) or int cells, an inet endpoint column spec
 * (see inet_column), or a 1-tuple holding a list of owner tuples (see owners_cell). Each column is as wide as its widest cell or title, right-aligned where
 * `right` says; the last column is not padded when left-aligned; one space between columns;
 * every line ends with "\n"; the header line has no trailing blanks. */
static PyObject *table_text(PyObject *self, PyObject *args) {
    PyObject *titles, *columns, *right;
    int header;
    if (!PyArg_ParseTuple(args, "O!O!O!p", &PyTuple_Type, &titles, &PyTuple_Type, &columns, &PyTuple_Type, &right, &header)) return NULL;
    Py_ssize_t ncol = PyTuple_GET_SIZE(columns);
    if (ncol == 0 || PyTuple_GET_SIZE(titles) != ncol || PyTuple_GET_SIZE(right) != ncol) Py_RETURN_NONE;
    Py_ssize_t nrow = -1;
    for (Py_ssize_t c = 0; c < ncol; c++) {
        PyObject *col = PyTuple_GET_ITEM(columns, c);
        if (!PyUnicode_Check(PyTuple_GET_ITEM(titles, c))) Py_RETURN_NONE;
        if (PyList_Check(col)) {
            if (nrow >= 0 && PyList_GET_SIZE(col) != nrow) Py_RETURN_NONE;
            nrow = PyList_GET_SIZE(col);
        } else if (!PyTuple_Check(col) || (PyTuple_GET_SIZE(col) != 6 && PyTuple_GET_SIZE(col) != 1) || !PyList_Check(PyTuple_GET_ITEM(col, 0))) {
            Py_RETURN_NONE;
        } else {
            Py_ssize_t n = PyList_GET_SIZE(PyTuple_GET_ITEM(col, 0));
            if (nrow >= 0 && n != nrow) Py_RETURN_NONE;
            nrow = n;
        }
    }
    Column *cols = PyMem_Calloc((size_t)ncol, sizeof(Column));
    PyObject **ports = PyMem_Calloc(2 * 65536, sizeof(PyObject *));
    Buf b = {NULL, 0, 0};
    PyObject *out = NULL;
    Cell cell;
    if (cols == NULL || ports == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t c = 0; c < ncol; c++) {
        Column *col = &cols[c];
        PyObject *given = PyTuple_GET_ITEM(columns, c);
        col->right = PyObject_IsTrue(PyTuple_GET_ITEM(right, c));
        if (col->right < 0) goto done;
        col->width = PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(titles, c));
        if (PyTuple_Check(given) && PyTuple_GET_SIZE(given) == 1 && PyList_Check(PyTuple_GET_ITEM(given, 0))) {
            /* an owners column */
            PyObject *list = PyTuple_GET_ITEM(given, 0);
            if (PyList_GET_SIZE(list) != nrow) {
                out = Py_NewRef(Py_None);
                goto done;
            }
            col->owners = 1;
            col->parts[0] = PyMem_Malloc((size_t)(nrow ? nrow : 1) * sizeof(PyObject *));
            if (col->parts[0] == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            memcpy(col->parts[0], PySequence_Fast_ITEMS(list), (size_t)nrow * sizeof(PyObject *));
            for (Py_ssize_t r = 0; r < nrow; r++) {
                Py_ssize_t width;
                int got = owners_cell(col->parts[0][r], NULL, &width);
                if (got < 0) goto done;
                if (got > 0) {
                    out = Py_NewRef(Py_None);
                    goto done;
                }
                if (width > col->width) col->width = width;
            }
            continue;
        }
        if (PyList_Check(given)) {
            col->parts[0] = PyMem_Malloc((size_t)(nrow ? nrow : 1) * sizeof(PyObject *));
            if (col->parts[0] == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            memcpy(col->parts[0], PySequence_Fast_ITEMS(given), (size_t)nrow * sizeof(PyObject *));
        } else {
            col->parts[0] = PyMem_Malloc((size_t)(nrow ? nrow : 1) * sizeof(PyObject *));
            col->parts[1] = PyMem_Malloc((size_t)(nrow ? nrow : 1) * sizeof(PyObject *));
            if (col->parts[0] == NULL || col->parts[1] == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            int got = inet_column(given, nrow, col, ports);
            if (got < 0) goto done;
            if (got > 0) {
                out = Py_NewRef(Py_None);
                goto done;
            }
        }
        int nparts = col->parts[1] ? 2 : 1;
        for (Py_ssize_t r = 0; r < nrow; r++) {
            Py_ssize_t width = 0;
            for (int k = 0; k < nparts; k++) {
                int got = cell_of(col->parts[k][r], &cell);
                if (got < 0) goto done;
                if (got > 0) {
                    out = Py_NewRef(Py_None);
                    goto done;
                }
                Py_XDECREF(cell.keep);
                width += cell.width;
            }
            if (width > col->width) col->width = width;
        }
    }
    if (!cols[ncol - 1].right) cols[ncol - 1].width = 0;
    if (header) {
        for (Py_ssize_t c = 0; c < ncol; c++) {
            if (c && buf_put(&b, " ", 1)) goto done;
            if (cell_of(PyTuple_GET_ITEM(titles, c), &cell) < 0) goto done;
            Py_ssize_t pad = cols[c].width - cell.width;
            int failed = (cols[c].right && buf_spaces(&b, pad)) || buf_put(&b, cell.s, (size_t)cell.n) || (!cols[c].right && buf_spaces(&b, pad));
            Py_XDECREF(cell.keep);
            if (failed) goto done;
        }
        while (b.size && b.data[b.size - 1] == ' ') b.size--;
        if (buf_put(&b, "\n", 1)) goto done;
    }
    for (Py_ssize_t r = 0; r < nrow; r++) {
        for (Py_ssize_t c = 0; c < ncol; c++) {
            if (c && buf_put(&b, " ", 1)) goto done;
            if (put_cell(&b, &cols[c], r, cols[c].width)) goto done;
        }
        if (buf_put(&b, "\n", 1)) goto done;
    }
    out = PyUnicode_DecodeUTF8(b.data ? b.data : "", (Py_ssize_t)b.size, "surrogatepass");
done:
    if (cols != NULL)
        for (Py_ssize_t c = 0; c < ncol; c++) {
            PyMem_Free(cols[c].parts[0]);
            PyMem_Free(cols[c].parts[1]);
        }
    if (ports != NULL)
        for (int p = 0; p < 2 * 65536; p++) Py_XDECREF(ports[p]);
    PyMem_Free(cols);
    PyMem_Free(ports);
    PyMem_Free(b.data);
    return out;
}

/* ------------------------------------------------------------------ fd_sockets */

/* fd_sockets(dir_fd, pid, low, high) -> bytes: (inode, pid, fd) int64 triples for every socket
 * among the descriptors numbered low..high-1 (high < 0: no limit) of the open /proc/PID/fd
 * directory, as owners.read_task does over os.listdir(). The kernel lists that directory in
 * descriptor order from position fd + 2, so the walk seeks to `low` and stops at `high`: a big
 * process cut into parts is not listed once per part. Entries that vanish meanwhile are
 * skipped; None when the directory cannot be read (the caller takes the Python path). The GIL
 * is released for the whole walk. */
static PyObject *fd_sockets(PyObject *self, PyObject *args) {
    int dir_fd;
    long long pid, low, high;
    if (!PyArg_ParseTuple(args, "iLLL", &dir_fd, &pid, &low, &high)) return NULL;
    if (low < 0) {
        PyErr_SetString(PyExc_ValueError, "fd_sockets: low must not be negative");
        return NULL;
    }
    int64_t *found = NULL;
    size_t count = 0, cap = 0;
    int failed = 0, nomem = 0;
    Py_BEGIN_ALLOW_THREADS
    int walk_fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = walk_fd < 0 ? NULL : fdopendir(walk_fd);
    if (dir == NULL) {
        if (walk_fd >= 0) close(walk_fd);
        failed = 1;
    } else {
        if (low > 0) seekdir(dir, (long)(low + 2)); /* a hint: entries below `low` are skipped anyway */
        struct dirent *entry;
        char link[64];
        while ((entry = readdir(dir)) != NULL) {
            const char *name = entry->d_name;
            if (name[0] < '0' || name[0] > '9') continue;
            long long fd = strtoll(name, NULL, 10);
            if (fd < low) continue;
            if (high >= 0 && fd >= high) break;
            ssize_t n = readlinkat(dir_fd, name, link, sizeof link - 1);
            if (n < 10 || memcmp(link, "socket:[", 8) != 0 || link[n - 1] != ']') continue;
            int64_t inode = 0;
            int ok = 1;
            for (ssize_t i = 8; i < n - 1; i++) {
                if (link[i] < '0' || link[i] > '9') {
                    ok = 0;
                    break;
                }
                inode = inode * 10 + (link[i] - '0');
            }
            if (!ok) continue;
            if (count + 3 > cap) {
                size_t more = cap ? cap * 2 : 768;
                int64_t *grown = realloc(found, more * sizeof *found);
                if (grown == NULL) {
                    nomem = 1;
                    break;
                }
                found = grown;
                cap = more;
            }
            found[count++] = inode;
            found[count++] = pid;
            found[count++] = fd;
        }
        closedir(dir);
    }
    Py_END_ALLOW_THREADS
    PyObject *out;
    if (nomem)
        out = PyErr_NoMemory();
    else if (failed)
        out = Py_NewRef(Py_None);
    else
        out = PyBytes_FromStringAndSize((const char *)found, (Py_ssize_t)(count * sizeof *found));
    free(found);
    return out;
}

static PyMethodDef methods[] = {
    {"inet_sockets", inet_sockets, METH_VARARGS, "Decode the runs of inet_diag messages of a chunk into Socket records (None: take the Python path)."},
    {"table_text", table_text, METH_VARARGS, "Give an aligned table of str/int columns as one string (None: take the Python path)."},
    {"fd_sockets", fd_sockets, METH_VARARGS, "Give (inode, pid, fd) int64 triples of the sockets numbered low..high-1 in an open /proc/PID/fd directory (None: take the Python path)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "sockscope._native", "C versions of the hot loops of `ls`.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
