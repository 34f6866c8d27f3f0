/* sockscope._native: the hot loops of `sockscope ls`, in C.
 *
 * inet_sockets:    inet_diag_msg records -> Socket named tuples (decoding, a whole reply chunk a call);
 * table_text:      columns of cells (and inet endpoints) -> the aligned table as one string;
 * internals_lines: the internals of each socket (ls -i -m -o --cgroup) -> its line in ss's words;
 * internals_json:  the same -> the JSON members they add;
 * fd_sockets:      one process's /proc/PID/fd directory -> (inode, pid, fd) of its sockets (`ls -p`).
 *
 * Each has a pure-Python twin (diag.decode_inet, render.table_text, cli/internals, owners.read_task) that gives the same
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
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
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

/* ------------------------------------------------------------------ internals (ls -i -m -o --cgroup) */

#define INET_DIAG_INFO 2
#define INET_DIAG_CONG 4
#define INET_DIAG_SKMEMINFO 7
#define INET_DIAG_CGROUP_ID 21
#define ATTR_TYPES 32
#define TCP_INFO_HEAD 104
#define TCP_INFO_FIELDS 57
#define MEMORY_FIELDS 9
#define WANT_TIMERS 1
#define WANT_CGROUPS 2

/* The attributes of one message (m: after the netlink header, size: the rest of it) by type,
 * the last one of a type winning as in diag.attributes. -1 when they are malformed. */
typedef struct {
    const unsigned char *data[ATTR_TYPES];
    Py_ssize_t len[ATTR_TYPES];
} Attrs;

static int scan_attrs(const unsigned char *m, Py_ssize_t size, Attrs *attrs) {
    memset(attrs->data, 0, sizeof attrs->data);
    Py_ssize_t at = INET_MSG;
    while (at + 4 <= size) {
        uint16_t len, type;
        memcpy(&len, m + at, 2);
        memcpy(&type, m + at + 2, 2);
        if (len < 4 || at + len > size) return -1;
        type &= 0x3FFF;
        if (type < ATTR_TYPES) {
            attrs->data[type] = m + at + 4;
            attrs->len[type] = len - 4;
        }
        at += (len + 3) & ~3;
    }
    return 0;
}

/* Numbers seen lately, shared between records: tcp_info of 50,000 sockets repeats its mss, pmtu,
 * windows, counters... and a new int object for each would double the memory (and the page
 * faults) of a listing. Direct-mapped by value; ints are immutable, so sharing is invisible. One
 * table for the process (the GIL guards it): it keeps at most NUMBER_SLOTS small ints alive. */
#define NUMBER_SLOTS 4096
typedef struct {
    unsigned long long value[NUMBER_SLOTS];
    PyObject *number[NUMBER_SLOTS];
} Numbers;

static PyObject *number_of(Numbers *seen, unsigned long long value) {
    if (value < 256) return PyLong_FromUnsignedLongLong(value); /* Python keeps these already */
    size_t slot = (size_t)((value * 0x9E3779B97F4A7C15ull) >> 52) % NUMBER_SLOTS;
    if (seen->number[slot] != NULL && seen->value[slot] == value) return Py_NewRef(seen->number[slot]);
    PyObject *made = PyLong_FromUnsignedLongLong(value);
    if (made == NULL) return NULL;
    Py_XSETREF(seen->number[slot], Py_NewRef(made));
    seen->value[slot] = value;
    return made;
}

/* What the caller gives to decode internals: the record types and the timer names. */
typedef struct {
    int want;
    PyTypeObject *internals, *tcp_info, *memory, *timer;
    PyObject *timer_names, *unknown_timer;
    PyObject *congestion; /* the last congestion name made (one or two per dump) */
    Numbers *seen;
} Inside;

static Numbers numbers_seen;

static uint64_t u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* struct tcp_info's fields after the 104 bytes every kernel sends, by size in kernel order, each
 * present only when the kernel's length covers it (as diag._TCP_INFO_TAIL). */
static const char TCP_TAIL[] = "888844444488884488444444";
/* tail field indexes holding a rate: bytes/s in the kernel, bits/s for us (all ones: no limit, kept) */
static int is_rate(int tail_index) { return tail_index == 0 || tail_index == 1 || tail_index == 10; }

static PyObject *rate_of(Numbers *seen, uint64_t v) {
    if (v == UINT64_MAX) return number_of(seen, v);
    if (v <= UINT64_MAX / 8) return number_of(seen, v * 8);
    PyObject *big = PyLong_FromUnsignedLongLong(v), *eight = PyLong_FromLong(8), *out = NULL;
    if (big != NULL && eight != NULL) out = PyNumber_Multiply(big, eight);
    Py_XDECREF(big);
    Py_XDECREF(eight);
    return out;
}

static PyObject *tcp_info_of(const Inside *in, const unsigned char *p, Py_ssize_t len) {
    PyObject *info = new_record(in->tcp_info, TCP_INFO_FIELDS);
    if (info == NULL) return NULL;
    Py_ssize_t k = 0;
    for (int i = 0; i < 6; i++) PyTuple_SET_ITEM(info, k++, PyLong_FromUnsignedLong(p[i]));
    PyTuple_SET_ITEM(info, k++, PyLong_FromUnsignedLong(p[6] & 0xF));
    PyTuple_SET_ITEM(info, k++, PyLong_FromUnsignedLong(p[6] >> 4));
    PyTuple_SET_ITEM(info, k++, Py_NewRef(p[7] & 1 ? Py_True : Py_False));
    for (int i = 0; i < 24; i++) PyTuple_SET_ITEM(info, k++, number_of(in->seen, u32(p + 8 + 4 * i)));
    Py_ssize_t at = TCP_INFO_HEAD;
    for (int tail = 0; TCP_TAIL[tail]; tail++) {
        int size = TCP_TAIL[tail] - '0';
        PyObject *value;
        if (at + size > len) {
            value = Py_NewRef(Py_None);
        } else if (size == 8) {
            value = is_rate(tail) ? rate_of(in->seen, u64(p + at)) : number_of(in->seen, u64(p + at));
        } else {
            value = number_of(in->seen, u32(p + at));
        }
        at += size;
        PyTuple_SET_ITEM(info, k++, value);
    }
    for (Py_ssize_t i = 0; i < TCP_INFO_FIELDS; i++)
        if (PyTuple_GET_ITEM(info, i) == NULL) {
            Py_DECREF(info);
            return NULL;
        }
    return info;
}

static PyObject *memory_of(const Inside *in, const unsigned char *p, Py_ssize_t len) {
    PyObject *memory = new_record(in->memory, MEMORY_FIELDS);
    if (memory == NULL) return NULL;
    Py_ssize_t count = len / 4;
    for (Py_ssize_t i = 0; i < MEMORY_FIELDS; i++) {
        PyObject *value = i < count ? number_of(in->seen, u32(p + 4 * i)) : Py_NewRef(Py_None);
        if (value == NULL) {
            Py_DECREF(memory);
            return NULL;
        }
        PyTuple_SET_ITEM(memory, i, value);
    }
    return memory;
}

/* The congestion name: the text before the first NUL; NULL without an error when it is not ASCII
 * (the Python twin then decodes it, replacing what is not). */
static PyObject *congestion_of(Inside *in, const unsigned char *p, Py_ssize_t len) {
    const unsigned char *end = memchr(p, 0, (size_t)len);
    Py_ssize_t n = end ? end - p : len;
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] & 0x80) return NULL;
    PyObject *last = in->congestion;
    if (last != NULL && PyUnicode_GET_LENGTH(last) == n && memcmp(PyUnicode_DATA(last), p, (size_t)n) == 0) return Py_NewRef(last);
    PyObject *name = PyUnicode_FromStringAndSize((const char *)p, n);
    if (name == NULL) return NULL;
    Py_XSETREF(in->congestion, Py_NewRef(name));
    return name;
}

static PyObject *timer_of(const Inside *in, const unsigned char *m) {
    unsigned kind = m[2];
    if (kind == 0) return Py_NewRef(Py_None);
    PyObject *name = kind < (unsigned)PyTuple_GET_SIZE(in->timer_names) ? PyTuple_GET_ITEM(in->timer_names, kind) : in->unknown_timer;
    uint32_t expires = u32(m + 52);
    PyObject *timer = new_record(in->timer, 3);
    PyObject *left = PyLong_FromLongLong(expires < 0x80000000u ? (long long)expires : (long long)expires - 0x100000000LL);
    PyObject *retrans = PyLong_FromUnsignedLong(m[3]);
    if (timer == NULL || left == NULL || retrans == NULL) {
        Py_XDECREF(timer);
        Py_XDECREF(left);
        Py_XDECREF(retrans);
        return NULL;
    }
    PyTuple_SET_ITEM(timer, 0, Py_NewRef(name));
    PyTuple_SET_ITEM(timer, 1, left);
    PyTuple_SET_ITEM(timer, 2, retrans);
    return timer;
}

/* Whether the Python twin would read this message's internals differently (or raise): then the
 * whole chunk goes back to Python. */
static int internals_unusual(const unsigned char *m, Py_ssize_t size) {
    Attrs attrs;
    if (scan_attrs(m, size, &attrs) < 0) return 1;
    if (attrs.data[INET_DIAG_SKMEMINFO] && attrs.len[INET_DIAG_SKMEMINFO] < 28) return 1;
    const unsigned char *cong = attrs.data[INET_DIAG_CONG];
    if (cong) {
        Py_ssize_t len = attrs.len[INET_DIAG_CONG];
        const unsigned char *end = memchr(cong, 0, (size_t)len);
        for (Py_ssize_t i = 0; i < (end ? end - cong : len); i++)
            if (cong[i] & 0x80) return 1;
    }
    return 0;
}

/* The Internals record of one message, as diag.internals gives it (cgroup path left None). */
static PyObject *internals_of(Inside *in, const unsigned char *m, Py_ssize_t size) {
    Attrs attrs;
    if (scan_attrs(m, size, &attrs) < 0) {
        PyErr_SetString(PyExc_ValueError, "inet_diag attributes changed while decoding");
        return NULL;
    }
    PyObject *fields[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    const unsigned char *info = attrs.data[INET_DIAG_INFO];
    fields[0] = info && attrs.len[INET_DIAG_INFO] >= TCP_INFO_HEAD ? tcp_info_of(in, info, attrs.len[INET_DIAG_INFO]) : Py_NewRef(Py_None);
    const unsigned char *cong = attrs.data[INET_DIAG_CONG];
    fields[1] = cong ? congestion_of(in, cong, attrs.len[INET_DIAG_CONG]) : Py_NewRef(Py_None);
    const unsigned char *memory = attrs.data[INET_DIAG_SKMEMINFO];
    fields[2] = memory ? memory_of(in, memory, attrs.len[INET_DIAG_SKMEMINFO]) : Py_NewRef(Py_None);
    fields[3] = in->want & WANT_TIMERS ? timer_of(in, m) : Py_NewRef(Py_None);
    const unsigned char *cgroup = attrs.data[INET_DIAG_CGROUP_ID];
    int has_cgroup = in->want & WANT_CGROUPS && cgroup && attrs.len[INET_DIAG_CGROUP_ID] >= 8;
    fields[4] = has_cgroup ? PyLong_FromUnsignedLongLong(u64(cgroup)) : Py_NewRef(Py_None);
    PyObject *record = new_record(in->internals, 7);
    int failed = record == NULL;
    for (int i = 0; i < 5; i++) failed |= fields[i] == NULL;
    if (failed) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "inet_diag congestion name is not ASCII");
        for (int i = 0; i < 5; i++) Py_XDECREF(fields[i]);
        Py_XDECREF(record);
        return NULL;
    }
    for (int i = 0; i < 5; i++) PyTuple_SET_ITEM(record, i, fields[i]);
    PyTuple_SET_ITEM(record, 5, Py_NewRef(Py_None)); /* cgroup path: named by the inventory */
    PyTuple_SET_ITEM(record, 6, Py_NewRef(Py_None)); /* container */
    return record;
}

typedef struct {
    Py_ssize_t offset, length, count;
    int family;
} Run;

/* The runs of a spans list [(offset, length, count), ...], checked against the chunk: every
 * message of a run has the run's family (inet or inet6), a known state and sound attributes
 * where v6only is read. Gives the number of messages, -1 to take the Python path. */
static Py_ssize_t check_runs(PyObject *spans, const Py_buffer *chunk, Py_ssize_t nstates, Run *runs, int inside) {
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
            if (inside && internals_unusual(m, run->length - NLMSG_HDR)) return -1;
        }
        total += run->count;
    }
    return total;
}

/* inet_sockets(chunk, spans, netid, inet, inet6, states, Endpoint, Socket, netns, devices[, inside])
 * -> list[Socket] | None: every message of the spans, decoded in one call (replies where
 * sockets of several states alternate come as many short runs). devices(ifindex) names the
 * interface a socket is bound to (ifindex != 0). With `inside` = (want, Internals, TcpInfo,
 * SocketMemory, Timer, timer names), each Socket carries its Internals (want: 1 timers, 2 cgroup ids). */
static PyObject *inet_sockets(PyObject *self, PyObject *args) {
    Py_buffer chunk;
    PyObject *spans, *netid, *fam_inet, *fam_inet6, *states, *netns, *devices, *inside_spec = Py_None;
    PyTypeObject *endpoint_type, *socket_type;
    if (!PyArg_ParseTuple(args, "y*O!OOOO!O!O!OO|O", &chunk, &PyList_Type, &spans, &netid, &fam_inet, &fam_inet6, &PyTuple_Type, &states,
                          &PyType_Type, &endpoint_type, &PyType_Type, &socket_type, &netns, &devices, &inside_spec))
        return NULL;
    Inside in = {0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    int inside = inside_spec != Py_None;
    if (inside && !PyArg_ParseTuple(inside_spec, "iO!O!O!O!O!", &in.want, &PyType_Type, &in.internals, &PyType_Type, &in.tcp_info, &PyType_Type,
                                    &in.memory, &PyType_Type, &in.timer, &PyTuple_Type, &in.timer_names)) {
        PyBuffer_Release(&chunk);
        return NULL;
    }
    PyObject *out = NULL;
    AddrSlot slots[ADDR_SLOTS];
    memset(slots, 0, sizeof slots);
    Py_ssize_t nruns = PyList_GET_SIZE(spans);
    Run *runs = PyMem_Malloc((size_t)(nruns ? nruns : 1) * sizeof(Run));
    if (runs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = check_runs(spans, &chunk, PyTuple_GET_SIZE(states), runs, inside);
    if (total < 0) goto fallback;
    if (inside && (in.unknown_timer = PyUnicode_FromString("unknown")) == NULL) goto done;
    in.seen = &numbers_seen;
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
            PyObject *extra = inside ? internals_of(&in, m, run->length - NLMSG_HDR) : Py_NewRef(Py_None);
            if (rq == NULL || wq == NULL || uid == NULL || inode == NULL || cookie == NULL || sock == NULL || device == NULL || extra == NULL) {
                Py_XDECREF(extra);
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
            PyTuple_SET_ITEM(sock, 14, extra);
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
    Py_XDECREF(in.unknown_timer);
    Py_XDECREF(in.congestion);

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

/* A socket's internals line being written (see internals_lines): the words so far. */
typedef struct {
    Buf *b;
    int words;
} Line;

static int internals_line(Line *l, PyObject *extra, int listening, int numeric, int options, int cgroups);

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

/* table_text(titles, columns, right, header[, after]) -> str | None
 * A column is a list of str (or str subclass) or int cells, an inet endpoint column spec
 * (see inet_column), or a 1-tuple holding a list of owner tuples (see owners_cell). Each column is as wide as its widest cell or title, right-aligned where
 * `right` says; the last column is not padded when left-aligned; one space between columns;
 * every line ends with "\n"; the header line has no trailing blanks. `after` (a list of str, one a
 * row) gives a line to write under each row ("" for none); given as (sockets, State.LISTEN,
 * numeric, options, cgroups), each socket's internals line (see internals_lines). */
static PyObject *table_text(PyObject *self, PyObject *args) {
    PyObject *titles, *columns, *right, *after = Py_None;
    int header;
    if (!PyArg_ParseTuple(args, "O!O!O!p|O", &PyTuple_Type, &titles, &PyTuple_Type, &columns, &PyTuple_Type, &right, &header, &after)) return NULL;
    Py_ssize_t ncol = PyTuple_GET_SIZE(columns);
    if (ncol == 0 || PyTuple_GET_SIZE(titles) != ncol || PyTuple_GET_SIZE(right) != ncol) Py_RETURN_NONE;
    /* `after` as (sockets, State.LISTEN, numeric, options, cgroups): each socket's internals line */
    PyObject *under = NULL, *listen = NULL;
    int numeric = 0, options = 0, cgroups = 0;
    if (PyTuple_Check(after)) {
        if (!PyArg_ParseTuple(after, "O!Oppp", &PyList_Type, &under, &listen, &numeric, &options, &cgroups)) return NULL;
    } else if (after != Py_None && !PyList_Check(after)) {
        Py_RETURN_NONE;
    }
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
    if (under != NULL) {
        if (PyList_GET_SIZE(under) != nrow) Py_RETURN_NONE;
        for (Py_ssize_t r = 0; r < nrow; r++) {
            PyObject *sock = PyList_GET_ITEM(under, r);
            if (!PyTuple_Check(sock) || PyTuple_GET_SIZE(sock) < 15) Py_RETURN_NONE;
        }
    } else if (after != Py_None) {
        if (PyList_GET_SIZE(after) != nrow) Py_RETURN_NONE;
        for (Py_ssize_t r = 0; r < nrow; r++)
            if (!PyUnicode_Check(PyList_GET_ITEM(after, r))) Py_RETURN_NONE;
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
    /* the text's size is known but for the last column and the internals lines: reserve it at
     * once rather than doubling (and copying) tens of megabytes along the way */
    Py_ssize_t row_size = ncol + (under != NULL ? 400 : 0);
    for (Py_ssize_t c = 0; c < ncol; c++) row_size += cols[c].width;
    if (buf_grow(&b, (size_t)(row_size * (nrow + 1)))) goto done;
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
        if (under != NULL) {
            PyObject *sock = PyList_GET_ITEM(under, r);
            Line line = {&b, 0};
            int got = internals_line(&line, PyTuple_GET_ITEM(sock, 14), PyTuple_GET_ITEM(sock, 2) == listen, numeric, options, cgroups);
            if (got < 0) goto done;
            if (got > 0) {
                out = Py_NewRef(Py_None);
                goto done;
            }
            if (line.words && buf_put(&b, "\n", 1)) goto done;
        } else if (after != Py_None && PyUnicode_GET_LENGTH(PyList_GET_ITEM(after, r))) {
            if (cell_of(PyList_GET_ITEM(after, r), &cell) < 0) goto done;
            int failed = buf_put(&b, cell.s, (size_t)cell.n) || buf_put(&b, "\n", 1);
            Py_XDECREF(cell.keep);
            if (failed) goto done;
        }
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

/* ------------------------------------------------------------------ internals_lines */

/* The words of `ss -tinmo` (misc/ss.c tcp_stats_print), one line a socket; the Python twin is
 * cli/internals.line. A value this code cannot read (a rate past 64 bits, a name that is not
 * printable ASCII) makes the whole call give None: Python draws it then. */


static int word(Line *l, const char *fmt, ...) {
    char text[160];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    if (n < 0 || n >= (int)sizeof text) {
        PyErr_SetString(PyExc_ValueError, "internals word too long");
        return -1;
    }
    if (buf_put(l->b, l->words ? " " : "\t ", l->words ? 1 : 2)) return -1;
    l->words++;
    return buf_put(l->b, text, (size_t)n);
}

/* A word made of up to four strings (NULL ends them early), without printf. */
static int words4(Line *l, const char *a, const char *b, const char *c, const char *d) {
    const char *parts[4] = {a, b, c, d};
    if (buf_put(l->b, l->words ? " " : "\t ", l->words ? 1 : 2)) return -1;
    l->words++;
    for (int i = 0; i < 4 && parts[i]; i++)
        if (buf_put(l->b, parts[i], strlen(parts[i]))) return -1;
    return 0;
}

/* v in decimal into out (at least 21 bytes, NUL-terminated) */
static void udecimal(char *out, unsigned long long v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    out[n] = 0;
}

/* `name:value`, the common word, without printf (it is most of the words of a line) */
static int word_count(Line *l, const char *name, unsigned long long value) {
    char digits[24];
    int n = 0;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    size_t len = strlen(name);
    if (buf_grow(l->b, len + (size_t)n + 3)) return -1;
    char *at = l->b->data + l->b->size;
    if (l->words) {
        *at++ = ' ';
    } else {
        *at++ = '\t';
        *at++ = ' ';
    }
    memcpy(at, name, len);
    at[len] = ':';
    memcpy(at + len + 1, digits + sizeof digits - n, (size_t)n);
    l->b->size = (size_t)(at + len + 1 + n - l->b->data);
    l->words++;
    return 0;
}

/* A field of a record as an unsigned number (None: 0); 1 when it is none of those. */
static int number(PyObject *record, Py_ssize_t index, unsigned long long *value) {
    PyObject *item = PyTuple_GET_ITEM(record, index);
    if (item == Py_None) {
        *value = 0;
        return 0;
    }
    if (!PyLong_Check(item)) return 1;
    /* on LP64 unsigned long is the 64 bits we need, and CPython reads it digit by digit, where
     * the long long version goes through a byte array (a third of the time of a line) */
    *value = sizeof(unsigned long) == 8 ? PyLong_AsUnsignedLong(item) : PyLong_AsUnsignedLongLong(item);
    if (*value == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* printable ASCII text of a str (NULL: not such a str) */
static const char *plain_text(PyObject *text) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) return NULL;
    const char *s = (const char *)PyUnicode_DATA(text);
    for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(text); i++)
        if (s[i] < 0x20 || s[i] > 0x7e) return NULL;
    return s;
}

/* us / 1000 as %g prints it. Below 1e6 us the quotient has at most 6 significant digits, so
 * %g gives its exact decimal without trailing zeros: written here without printf (which is
 * most of the time of a line otherwise). */
static void ms_text(char *out, size_t size, unsigned long long us) {
    if (us >= 1000000) {
        snprintf(out, size, "%g", (double)us / 1000);
        return;
    }
    unsigned part = (unsigned)(us % 1000);
    udecimal(out, us / 1000);
    if (part) {
        char *at = out + strlen(out);
        at[0] = '.';
        at[1] = (char)('0' + part / 100);
        at[2] = (char)('0' + part / 10 % 10);
        at[3] = (char)('0' + part % 10);
        int keep = 4;
        while (at[keep - 1] == '0') keep--;
        at[keep] = 0;
    }
}

static void rate_text(char *out, size_t size, double bps, int numeric) {
    if (numeric && bps < 9e15) /* %.0f rounds half to even, as nearbyint does in the default mode */
        udecimal(out, (unsigned long long)nearbyint(bps));
    else if (numeric)
        snprintf(out, size, "%.0f", bps);
    else if (bps >= 1e12)
        snprintf(out, size, "%.3gT", bps / 1e12);
    else if (bps >= 1e9)
        snprintf(out, size, "%.3gG", bps / 1e9);
    else if (bps >= 1e6)
        snprintf(out, size, "%.3gM", bps / 1e6);
    else if (bps >= 1e3)
        snprintf(out, size, "%.3gk", bps / 1e3);
    else
        snprintf(out, size, "%g", bps);
}

static void timer_text(char *buf, unsigned timeout) {
    unsigned secs = timeout / 1000, minutes = secs / 60, msecs = timeout % 1000;
    secs %= 60;
    buf[0] = 0;
    if (minutes) {
        msecs = 0;
        sprintf(buf, "%umin", minutes);
        if (minutes > 9) secs = 0;
    }
    if (secs) {
        if (secs > 9) msecs = 0;
        sprintf(buf + strlen(buf), "%u%s", secs, msecs ? "." : "sec");
    }
    if (msecs) sprintf(buf + strlen(buf), "%03u%s", msecs, secs ? "sec" : "ms");
}

/* TcpInfo field indexes (model.TcpInfo) */
enum {
    T_STATE, T_CA_STATE, T_RETRANSMITS, T_PROBES, T_BACKOFF, T_OPTIONS, T_SND_WSCALE, T_RCV_WSCALE, T_APP_LIMITED, T_RTO, T_ATO,
    T_SND_MSS, T_RCV_MSS, T_UNACKED, T_SACKED, T_LOST, T_RETRANS, T_FACKETS, T_LAST_SEND, T_LAST_ACK_SENT, T_LAST_RECEIVE,
    T_LAST_ACK, T_PMTU, T_RCV_SSTHRESH, T_RTT, T_RTTVAR, T_SSTHRESH, T_CWND, T_ADVMSS, T_REORDERING, T_RCV_RTT, T_RCV_SPACE,
    T_TOTAL_RETRANS, T_PACING_RATE, T_MAX_PACING_RATE, T_BYTES_ACKED, T_BYTES_RECEIVED, T_SEGS_OUT, T_SEGS_IN, T_NOTSENT,
    T_MIN_RTT, T_DATA_SEGS_IN, T_DATA_SEGS_OUT, T_DELIVERY_RATE, T_BUSY, T_RWND_LIMITED, T_SNDBUF_LIMITED, T_DELIVERED,
    T_DELIVERED_CE, T_BYTES_SENT, T_BYTES_RETRANS, T_DSACK_DUPS, T_REORD_SEEN, T_RCV_OOOPACK, T_SND_WND, T_RCV_WND, T_REHASH,
};

static int tcp_words(Line *l, PyObject *info, PyObject *congestion, int listening, int numeric, int options) {
    unsigned long long v[TCP_INFO_FIELDS];
    char ms1[40], ms2[40];
    if (PyTuple_GET_SIZE(info) != TCP_INFO_FIELDS) return 1;
    for (int i = 0; i < TCP_INFO_FIELDS; i++)
        if (number(info, i, &v[i])) return 1;
    static const struct {
        unsigned bit;
        const char *name;
    } flags[] = {{1, "ts"}, {64, "usec_ts"}, {2, "sack"}, {8, "ecn"}, {16, "ecnseen"}, {32, "fastopen"}};
    if (options)
        for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
            if (v[T_OPTIONS] & flags[i].bit && words4(l, flags[i].name, NULL, NULL, NULL)) return -1;
    if (congestion != Py_None) {
        const char *name = plain_text(congestion);
        if (name == NULL) return 1;
        if (*name && words4(l, name, NULL, NULL, NULL)) return -1;
    }
    if (v[T_OPTIONS] & 4) {
        udecimal(ms1, v[T_SND_WSCALE]);
        udecimal(ms2, v[T_RCV_WSCALE]);
        if (words4(l, "wscale:", ms1, ",", ms2)) return -1;
    }
    if (v[T_RTO] && v[T_RTO] != 3000000) {
        ms_text(ms1, sizeof ms1, v[T_RTO]);
        if (words4(l, "rto:", ms1, NULL, NULL)) return -1;
    }
    if (v[T_BACKOFF] && word_count(l, "backoff", v[T_BACKOFF])) return -1;
    if (v[T_RTT]) {
        ms_text(ms1, sizeof ms1, v[T_RTT]);
        ms_text(ms2, sizeof ms2, v[T_RTTVAR]);
        if (words4(l, "rtt:", ms1, "/", ms2)) return -1;
    }
    if (v[T_ATO]) {
        ms_text(ms1, sizeof ms1, v[T_ATO]);
        if (words4(l, "ato:", ms1, NULL, NULL)) return -1;
    }
    static const struct {
        int field;
        const char *name;
    } counts[] = {{T_SND_MSS, "mss"}, {T_PMTU, "pmtu"}, {T_RCV_MSS, "rcvmss"}, {T_ADVMSS, "advmss"}, {T_CWND, "cwnd"}},
      bytes[] = {{T_BYTES_SENT, "bytes_sent"}, {T_BYTES_RETRANS, "bytes_retrans"}, {T_BYTES_ACKED, "bytes_acked"},
                 {T_BYTES_RECEIVED, "bytes_received"}, {T_SEGS_OUT, "segs_out"}, {T_SEGS_IN, "segs_in"},
                 {T_DATA_SEGS_OUT, "data_segs_out"}, {T_DATA_SEGS_IN, "data_segs_in"}},
      lasts[] = {{T_LAST_SEND, "lastsnd"}, {T_LAST_RECEIVE, "lastrcv"}, {T_LAST_ACK, "lastack"}},
      spaces[] = {{T_RCV_SPACE, "rcv_space"}, {T_RCV_SSTHRESH, "rcv_ssthresh"}, {T_NOTSENT, "notsent"}},
      windows[] = {{T_RCV_OOOPACK, "rcv_ooopack"}, {T_SND_WND, "snd_wnd"}, {T_RCV_WND, "rcv_wnd"}, {T_REHASH, "rehash"}};
#define COUNTS(list)                                                                       \
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++)                              \
        if (v[list[i].field] && word_count(l, list[i].name, v[list[i].field])) return -1;
    COUNTS(counts)
    if (v[T_SSTHRESH] && v[T_SSTHRESH] < 0xFFFF && word_count(l, "ssthresh", v[T_SSTHRESH])) return -1;
    COUNTS(bytes)
    char r1[64], r2[64];
    if (v[T_RTT] && v[T_SND_MSS] && v[T_CWND]) {
        rate_text(r1, sizeof r1, (double)v[T_CWND] * (double)v[T_SND_MSS] * 8000000. / (double)v[T_RTT], numeric);
        if (words4(l, "send ", r1, "bps", NULL)) return -1;
    }
    COUNTS(lasts)
    if (v[T_PACING_RATE] && v[T_PACING_RATE] != UINT64_MAX) {
        rate_text(r1, sizeof r1, (double)v[T_PACING_RATE], numeric);
        if (v[T_MAX_PACING_RATE] && v[T_MAX_PACING_RATE] != UINT64_MAX) {
            rate_text(r2, sizeof r2, (double)v[T_MAX_PACING_RATE], numeric);
            if (words4(l, "pacing_rate ", r1, "bps/", r2) || buf_put(l->b, "bps", 3)) return -1;
        } else if (words4(l, "pacing_rate ", r1, "bps", NULL)) {
            return -1;
        }
    }
    if (v[T_DELIVERY_RATE]) {
        rate_text(r1, sizeof r1, (double)v[T_DELIVERY_RATE], numeric);
        if (words4(l, "delivery_rate ", r1, "bps", NULL)) return -1;
    }
    if (v[T_DELIVERED] && word_count(l, "delivered", v[T_DELIVERED])) return -1;
    if (v[T_DELIVERED_CE] && word_count(l, "delivered_ce", v[T_DELIVERED_CE])) return -1;
    if (v[T_APP_LIMITED] && words4(l, "app_limited", NULL, NULL, NULL)) return -1;
    unsigned long long busy = v[T_BUSY];
    if (busy) {
        if (word(l, "busy:%llums", busy / 1000)) return -1;
        if (v[T_RWND_LIMITED] && word(l, "rwnd_limited:%llums(%.1f%%)", v[T_RWND_LIMITED] / 1000, 100.0 * (double)v[T_RWND_LIMITED] / (double)busy))
            return -1;
        if (v[T_SNDBUF_LIMITED] &&
            word(l, "sndbuf_limited:%llums(%.1f%%)", v[T_SNDBUF_LIMITED] / 1000, 100.0 * (double)v[T_SNDBUF_LIMITED] / (double)busy))
            return -1;
    }
    if (v[T_UNACKED] && word_count(l, "unacked", v[T_UNACKED])) return -1;
    if ((v[T_RETRANS] || v[T_TOTAL_RETRANS]) && word(l, "retrans:%llu/%llu", v[T_RETRANS], v[T_TOTAL_RETRANS])) return -1;
    if (v[T_LOST] && word_count(l, "lost", v[T_LOST])) return -1;
    if (v[T_SACKED] && !listening && word_count(l, "sacked", v[T_SACKED])) return -1;
    if (v[T_DSACK_DUPS] && word_count(l, "dsack_dups", v[T_DSACK_DUPS])) return -1;
    if (v[T_FACKETS] && word_count(l, "fackets", v[T_FACKETS])) return -1;
    if (v[T_REORDERING] != 3 && word_count(l, "reordering", v[T_REORDERING])) return -1;
    if (v[T_REORD_SEEN] && word_count(l, "reord_seen", v[T_REORD_SEEN])) return -1;
    if (v[T_RCV_RTT]) {
        ms_text(ms1, sizeof ms1, v[T_RCV_RTT]);
        if (words4(l, "rcv_rtt:", ms1, NULL, NULL)) return -1;
    }
    COUNTS(spaces)
    if (v[T_MIN_RTT] && v[T_MIN_RTT] != 0xFFFFFFFFull) {
        ms_text(ms1, sizeof ms1, v[T_MIN_RTT]);
        if (words4(l, "minrtt:", ms1, NULL, NULL)) return -1;
    }
    COUNTS(windows)
#undef COUNTS
    return 0;
}

/* One socket's second line into l (nothing when it has nothing to show); 1: take the Python path. */
static int internals_line(Line *l, PyObject *extra, int listening, int numeric, int options, int cgroups) {
    if (extra == Py_None) return 0;
    if (!PyTuple_Check(extra) || PyTuple_GET_SIZE(extra) != 7) return 1;
    PyObject *tcp = PyTuple_GET_ITEM(extra, 0), *congestion = PyTuple_GET_ITEM(extra, 1), *memory = PyTuple_GET_ITEM(extra, 2);
    PyObject *timer = PyTuple_GET_ITEM(extra, 3), *cgroup_id = PyTuple_GET_ITEM(extra, 4);
    if (timer != Py_None) {
        unsigned long long retrans;
        if (!PyTuple_Check(timer) || PyTuple_GET_SIZE(timer) != 3 || number(timer, 2, &retrans)) return 1;
        const char *name = plain_text(PyTuple_GET_ITEM(timer, 0));
        long long expires = PyLong_Check(PyTuple_GET_ITEM(timer, 1)) ? PyLong_AsLongLong(PyTuple_GET_ITEM(timer, 1)) : -1;
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 1;
        }
        if (name == NULL || !PyLong_Check(PyTuple_GET_ITEM(timer, 1))) return 1;
        char left[64];
        timer_text(left, (unsigned)((unsigned long long)expires & 0xFFFFFFFFull));
        if (word(l, "timer:(%s,%s,%llu)", name, left, retrans)) return -1;
    }
    if (cgroups && cgroup_id != Py_None) {
        unsigned long long id;
        if (number(extra, 4, &id)) return 1;
        PyObject *path = PyTuple_GET_ITEM(extra, 5), *container = PyTuple_GET_ITEM(extra, 6);
        if (path == Py_None) {
            if (word(l, "cgroup:unreachable:%llx", id)) return -1;
        } else {
            const char *text = plain_text(path);
            if (text == NULL || strlen(text) > 120) return 1;
            if (word(l, "cgroup:%s", text)) return -1;
        }
        if (container != Py_None) {
            const char *text = plain_text(container);
            if (text == NULL || strlen(text) > 120) return 1;
            if (*text && word(l, "container:%s", text)) return -1;
        }
    }
    if (memory != Py_None) {
        unsigned long long m[MEMORY_FIELDS];
        if (!PyTuple_Check(memory) || PyTuple_GET_SIZE(memory) != MEMORY_FIELDS) return 1;
        for (int i = 0; i < MEMORY_FIELDS; i++)
            if (number(memory, i, &m[i])) return 1;
        char text[160];
        int n = snprintf(text, sizeof text, "skmem:(r%llu,rb%llu,t%llu,tb%llu,f%llu,w%llu,o%llu", m[0], m[1], m[2], m[3], m[4], m[5], m[6]);
        if (PyTuple_GET_ITEM(memory, 7) != Py_None) n += snprintf(text + n, sizeof text - (size_t)n, ",bl%llu", m[7]);
        if (PyTuple_GET_ITEM(memory, 8) != Py_None) n += snprintf(text + n, sizeof text - (size_t)n, ",d%llu", m[8]);
        if (word(l, "%s)", text)) return -1;
    }
    if (tcp != Py_None) {
        if (!PyTuple_Check(tcp)) return 1;
        return tcp_words(l, tcp, congestion, listening, numeric, options);
    }
    if (congestion != Py_None) {
        const char *name = plain_text(congestion);
        if (name == NULL) return 1;
        if (*name && words4(l, name, NULL, NULL, NULL)) return -1;
    }
    return 0;
}

/* internals_lines(sockets, listen, numeric, options, cgroups) -> list[str] | None: the second line
 * of each socket (`\t ` and ss's words, "" when there is nothing to show); `listen` is State.LISTEN. */
static PyObject *internals_lines(PyObject *self, PyObject *args) {
    PyObject *sockets, *listen;
    int numeric, options, cgroups;
    if (!PyArg_ParseTuple(args, "O!Oppp", &PyList_Type, &sockets, &listen, &numeric, &options, &cgroups)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(sockets);
    PyObject *out = PyList_New(n), *empty = PyUnicode_FromString("");
    Buf b = {NULL, 0, 0};
    Line l = {&b, 0};
    if (out == NULL || empty == NULL) goto error;
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *sock = PyList_GET_ITEM(sockets, r);
        if (!PyTuple_Check(sock) || PyTuple_GET_SIZE(sock) < 15) goto fallback;
        b.size = 0;
        l.words = 0;
        int got = internals_line(&l, PyTuple_GET_ITEM(sock, 14), PyTuple_GET_ITEM(sock, 2) == listen, numeric, options, cgroups);
        if (got < 0) goto error;
        if (got > 0) goto fallback;
        PyObject *text = l.words ? PyUnicode_DecodeASCII(b.data, (Py_ssize_t)b.size, NULL) : Py_NewRef(empty);
        if (text == NULL) goto error;
        PyList_SET_ITEM(out, r, text);
    }
    Py_DECREF(empty);
    PyMem_Free(b.data);
    return out;
fallback:
    Py_XDECREF(out);
    Py_XDECREF(empty);
    PyMem_Free(b.data);
    Py_RETURN_NONE;
error:
    Py_XDECREF(out);
    Py_XDECREF(empty);
    PyMem_Free(b.data);
    return NULL;
}

/* ------------------------------------------------------------------ internals_json */

/* A JSON number (or null/true/false) of a record's field; 1: not one this code writes. */
static int json_value(Buf *b, PyObject *item) {
    if (item == Py_None) return buf_put(b, "null", 4);
    if (item == Py_True) return buf_put(b, "true", 4);
    if (item == Py_False) return buf_put(b, "false", 5);
    if (!PyLong_CheckExact(item)) return 1;
    char digits[24];
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(item, &overflow);
    if (overflow > 0) { /* past 2^63: the kernel's all-ones "no limit", or a large counter */
        unsigned long long u = sizeof(unsigned long) == 8 ? PyLong_AsUnsignedLong(item) : PyLong_AsUnsignedLongLong(item);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 1; /* past 2^64: a rate times 8; Python writes it */
        }
        udecimal(digits, u);
        return buf_put(b, digits, strlen(digits));
    }
    if (overflow < 0 || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 1;
    }
    Py_ssize_t n = decimal(v, digits);
    return buf_put(b, digits, (size_t)n);
}

/* A JSON string of printable ASCII without quotes or backslashes (or null); 1: any other text. */
static int json_text_of(Buf *b, PyObject *text) {
    if (text == Py_None) return buf_put(b, "null", 4);
    const char *s = plain_text(text);
    if (s == NULL || strchr(s, '"') || strchr(s, '\\')) return 1;
    return buf_put(b, "\"", 1) || buf_put(b, s, strlen(s)) || buf_put(b, "\"", 1) ? -1 : 0;
}

/* {"key": value, ...} of a record, the keys given as their JSON text ('{"state": ', ', "ca_state": ', ...). */
static int json_record(Buf *b, PyObject *record, PyObject *keys) {
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    if (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != n) return 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Cell key;
        if (cell_of(PyTuple_GET_ITEM(keys, i), &key) != 0 || buf_put(b, key.s, (size_t)key.n)) return -1;
        int got = json_value(b, PyTuple_GET_ITEM(record, i));
        if (got) return got;
    }
    return buf_put(b, "}", 1);
}

/* The members one socket's asked groups add (as cli/internals.json_text writes them). */
static int internals_json_of(Buf *b, PyObject *extra, int asked, PyObject *tcp_keys, PyObject *memory_keys) {
    if (extra != Py_None && (!PyTuple_Check(extra) || PyTuple_GET_SIZE(extra) != 7)) return 1;
#define FIELD(i) (extra == Py_None ? Py_None : PyTuple_GET_ITEM(extra, i))
    int got;
    if (asked & 1) { /* info */
        if (buf_put(b, ", \"tcp\": ", 9)) return -1;
        got = FIELD(0) == Py_None ? buf_put(b, "null", 4) : json_record(b, FIELD(0), tcp_keys);
        if (got) return got;
        if (buf_put(b, ", \"congestion\": ", 16)) return -1;
        if ((got = json_text_of(b, FIELD(1)))) return got;
    }
    if (asked & 2) { /* memory */
        if (buf_put(b, ", \"memory\": ", 12)) return -1;
        got = FIELD(2) == Py_None ? buf_put(b, "null", 4) : json_record(b, FIELD(2), memory_keys);
        if (got) return got;
    }
    if (asked & 4) { /* timers */
        PyObject *timer = FIELD(3);
        if (buf_put(b, ", \"timer\": ", 11)) return -1;
        if (timer == Py_None) {
            if (buf_put(b, "null", 4)) return -1;
        } else {
            if (!PyTuple_Check(timer) || PyTuple_GET_SIZE(timer) != 3) return 1;
            if (buf_put(b, "{\"name\": ", 9)) return -1;
            if ((got = json_text_of(b, PyTuple_GET_ITEM(timer, 0)))) return got;
            if (buf_put(b, ", \"expires_ms\": ", 16)) return -1;
            if ((got = json_value(b, PyTuple_GET_ITEM(timer, 1)))) return got;
            if (buf_put(b, ", \"retransmits\": ", 17)) return -1;
            if ((got = json_value(b, PyTuple_GET_ITEM(timer, 2)))) return got;
            if (buf_put(b, "}", 1)) return -1;
        }
    }
    if (asked & 8) { /* cgroup */
        if (buf_put(b, ", \"cgroup\": ", 12)) return -1;
        if (FIELD(4) == Py_None) {
            if (buf_put(b, "null", 4)) return -1;
        } else {
            if (buf_put(b, "{\"id\": ", 7)) return -1;
            if ((got = json_value(b, FIELD(4)))) return got;
            if (buf_put(b, ", \"path\": ", 10)) return -1;
            if ((got = json_text_of(b, FIELD(5)))) return got;
            if (buf_put(b, ", \"container\": ", 15)) return -1;
            if ((got = json_text_of(b, FIELD(6)))) return got;
            if (buf_put(b, "}", 1)) return -1;
        }
    }
#undef FIELD
    return 0;
}

/* internals_json(sockets, asked, tcp_keys, memory_keys) -> list[str] | None: the JSON members each
 * socket's internals add (asked: 1 info, 2 memory, 4 timers, 8 cgroup); the Python twin is
 * cli/internals.json_text. Text this code does not write plainly (a name needing escapes, a
 * number past 64 bits) makes the whole call give None. */
static PyObject *internals_json(PyObject *self, PyObject *args) {
    PyObject *sockets, *tcp_keys, *memory_keys;
    int asked;
    if (!PyArg_ParseTuple(args, "O!iO!O!", &PyList_Type, &sockets, &asked, &PyTuple_Type, &tcp_keys, &PyTuple_Type, &memory_keys)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(sockets);
    PyObject *out = PyList_New(n);
    Buf b = {NULL, 0, 0};
    if (out == NULL) return NULL;
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *sock = PyList_GET_ITEM(sockets, r);
        if (!PyTuple_Check(sock) || PyTuple_GET_SIZE(sock) < 15) goto fallback;
        b.size = 0;
        int got = internals_json_of(&b, PyTuple_GET_ITEM(sock, 14), asked, tcp_keys, memory_keys);
        if (got < 0) goto error;
        if (got > 0) goto fallback;
        PyObject *text = PyUnicode_DecodeASCII(b.data ? b.data : "", (Py_ssize_t)b.size, NULL);
        if (text == NULL) goto error;
        PyList_SET_ITEM(out, r, text);
    }
    PyMem_Free(b.data);
    return out;
fallback:
    PyErr_Clear();
    Py_DECREF(out);
    PyMem_Free(b.data);
    Py_RETURN_NONE;
error:
    Py_DECREF(out);
    PyMem_Free(b.data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"inet_sockets", inet_sockets, METH_VARARGS, "Decode the runs of inet_diag messages of a chunk into Socket records (None: take the Python path)."},
    {"internals_json", internals_json, METH_VARARGS, "Give the JSON members each socket's internals add (None: take the Python path)."},
    {"internals_lines", internals_lines, METH_VARARGS, "Give each socket's internals line in ss's words (None: take the Python path)."},
    {"table_text", table_text, METH_VARARGS, "Give an aligned table of str/int columns as one string (None: take the Python path)."},
    {"fd_sockets", fd_sockets, METH_VARARGS, "Give (inode, pid, fd) int64 triples of the sockets numbered low..high-1 in an open /proc/PID/fd directory (None: take the Python path)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "sockscope._native", "C versions of the hot loops of `ls`.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
