# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The spans of an OTLP trace request read straight from its bytes (compiled: see ``native``).

``otlp_wire`` reads a request through protobuf's parser (upb) and a view of the messages; making Python
objects of each field through upb's accessors costs about 6 µs a span. This reads the same request's
bytes in C and makes only the dicts ``otlp_wire`` makes, in about 2 µs. It runs after upb has parsed the
request without error, so the bytes are a well-formed request: what protobuf refuses is refused before.

It reads as protobuf's generated classes read: the last of a field written twice, a known field written
with another wire type skipped as an unknown one (as protobuf does; the view's map drops the attribute).
A span it does not read itself is read by the view, that span alone: a message field written twice in it
(protobuf merges the copies), an attribute value that is not UTF-8 or not an AnyValue (the view names it,
or lets a later duplicate key replace it). Spans are made one at a time as they are iterated, as the view
makes them. ``test_otlp_wire`` checks on generated, damaged, extended and recorded requests that it reads
what the generated classes read.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8


cdef extern from "Python.h":
    ctypedef unsigned char Py_UCS1
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    Py_UCS1* PyUnicode_1BYTE_DATA(object o)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
from cpython.ref cimport PyObject
from libc.stdint cimport uint64_t, int64_t, int32_t
from libc.string cimport memcmp, memcpy

import sys

from bifrost_pipeline.proxy.otlp_wire import value_of

cdef bint LITTLE_ENDIAN = sys.byteorder == "little"  # protobuf writes a double's 8 bytes little-endian


class Unusual(Exception):
    """A request this reader leaves to otlp_wire's view (read the way protobuf reads it)."""


cdef enum:
    VARINT = 0
    I64 = 1
    LEN = 2
    START_GROUP = 3
    END_GROUP = 4
    I32 = 5
    MAX_DEPTH = 100  # protobuf's own limit of nested messages and groups


cdef struct Cursor:  # where a message's fields are read: p[pos:end]
    const unsigned char* p
    Py_ssize_t pos
    Py_ssize_t end


cdef inline Cursor at(const unsigned char* p, Py_ssize_t start, Py_ssize_t end) noexcept:
    cdef Cursor c
    c.p = p
    c.pos = start
    c.end = end
    return c


cdef inline uint64_t read_varint(Cursor* c) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char b
    while c.pos < c.end:
        b = c.p[c.pos]
        c.pos += 1
        result |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            return result
        shift += 7
        if shift >= 70:
            break
    raise Unusual("varint")


cdef inline Py_ssize_t read_len(Cursor* c) except -1:
    cdef uint64_t n = read_varint(c)
    if n > <uint64_t>(c.end - c.pos):
        raise Unusual("length")
    return <Py_ssize_t>n


cdef inline bint next_field(Cursor* c, uint64_t* number, int* wire) except -1:
    """Read the next field's tag (False past the message's last field)."""
    if c.pos >= c.end:
        return False
    cdef uint64_t tag = read_varint(c)
    number[0] = tag >> 3
    wire[0] = <int>(tag & 7)
    return True


cdef inline Py_ssize_t take(Cursor* c) except -1:
    """Past a length-delimited field's payload; returns where it starts (it ends at the cursor)."""
    cdef Py_ssize_t n = read_len(c)
    c.pos += n
    return c.pos - n


cdef int skip(Cursor* c, int wire, uint64_t number, int depth=0) except -1:
    """Past a field of an unknown number (or of a known one written with another wire type)."""
    cdef Py_ssize_t n
    cdef uint64_t tag
    if wire == VARINT:
        read_varint(c)
    elif wire == I64:
        if c.end - c.pos < 8:
            raise Unusual("fixed64")
        c.pos += 8
    elif wire == LEN:
        n = read_len(c)
        c.pos += n
    elif wire == I32:
        if c.end - c.pos < 4:
            raise Unusual("fixed32")
        c.pos += 4
    elif wire == START_GROUP and depth < MAX_DEPTH:  # a group: its fields, up to the END_GROUP of its number
        while True:
            tag = read_varint(c)
            if <int>(tag & 7) == END_GROUP:
                if tag >> 3 != number:
                    raise Unusual("group")
                return 0
            skip(c, <int>(tag & 7), tag >> 3, depth + 1)
    else:
        raise Unusual("wire type")
    return 0


cdef inline uint64_t fixed64(Cursor* c) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v = 0
    cdef int i
    if c.end - c.pos < 8:
        raise Unusual("fixed64")
    for i in range(8):
        v |= (<uint64_t>c.p[c.pos + i]) << (8 * i)
    c.pos += 8
    return v


cdef inline str text(const unsigned char* p, Py_ssize_t start, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(<const char*>(p + start), n, NULL)


cdef enum:
    KEY_SLOTS = 1024  # a power of two
    KEY_MAX = 64  # longer attribute names are decoded each time


# Attribute names repeat from span to span (a few dozen names): each slot keeps the last name whose bytes
# hashed to it, and a name read again is that same str, not a new one. This spares decoding it, freeing it,
# and hashing it again in every dict it goes into (a str keeps its hash). ASCII names only: their UTF-8
# bytes are the str's own data, compared with memcmp. The list owns the strs; the array points into it.
cdef list key_owners = [None] * KEY_SLOTS
cdef PyObject* key_slots[KEY_SLOTS]


cdef inline str key_text(const unsigned char* p, Py_ssize_t start, Py_ssize_t n):
    cdef uint64_t h = 14695981039346656037ULL  # FNV-1a
    cdef Py_ssize_t i
    cdef PyObject* found
    if n > KEY_MAX:
        return text(p, start, n)
    for i in range(n):
        h = (h ^ p[start + i]) * 1099511628211ULL
    h &= KEY_SLOTS - 1
    found = key_slots[h]
    if found != NULL and PyUnicode_GET_LENGTH(<object>found) == n and memcmp(
        PyUnicode_1BYTE_DATA(<object>found), p + start, n
    ) == 0:
        return <str>found
    name = text(p, start, n)
    if PyUnicode_IS_COMPACT_ASCII(name):
        key_owners[h] = name
        key_slots[h] = <PyObject*>name
    return name


cdef const char* HEX_DIGITS = b"0123456789abcdef"


cdef str hexid(const unsigned char* p, Py_ssize_t start, Py_ssize_t n):
    """bytes.hex() of the n bytes at start, written straight into the string."""
    cdef str out = PyUnicode_New(2 * n, 127)
    cdef Py_UCS1* dst = PyUnicode_1BYTE_DATA(out)
    cdef Py_ssize_t i
    for i in range(n):
        dst[2 * i] = HEX_DIGITS[p[start + i] >> 4]
        dst[2 * i + 1] = HEX_DIGITS[p[start + i] & 0x0F]
    return out


cdef object attribute_value(const unsigned char* p, Py_ssize_t start, Py_ssize_t n):
    """An AnyValue's value, when it holds one field alone as emitters write it (a string, a bool, an integer
    below 2**63, a double, an array of such strings) here; anything else by ``otlp_wire.value_of``."""
    cdef Cursor c = at(p, start, start + n)
    cdef Cursor element
    cdef uint64_t v
    cdef double d
    cdef Py_ssize_t size
    cdef unsigned char tag
    cdef list values
    if n > 1:
        tag = p[start]
        if tag == 0x0A:  # string_value
            c.pos += 1
            size = read_len(&c)
            if c.pos + size == c.end:
                return PyUnicode_DecodeUTF8(<const char*>(p + c.pos), size, NULL)
        elif tag == 0x10 and n == 2 and p[start + 1] < 0x80:  # bool_value, as protobuf writes it
            return p[start + 1] != 0
        elif tag == 0x18 and n <= 10 and p[start + n - 1] < 0x80:  # int_value, at most 9 bytes of varint
            c.pos += 1
            v = read_varint(&c)
            if c.pos == c.end:
                return <int64_t>v
        elif tag == 0x21 and n == 9 and LITTLE_ENDIAN:  # double_value
            memcpy(&d, p + start + 1, 8)  # little-endian, as x86 and ARM hold a double
            return d
        elif tag == 0x2A:  # array_value: an ArrayValue, its values each an AnyValue holding a string alone
            c.pos += 1
            size = read_len(&c)
            if c.pos + size == c.end:
                values = []
                while c.pos < c.end:
                    if p[c.pos] != 0x0A:
                        break
                    c.pos += 1
                    size = read_len(&c)  # the element AnyValue
                    if size < 2 or p[c.pos] != 0x0A:
                        break
                    element = at(p, c.pos + 1, c.pos + size)
                    c.pos += size
                    size = read_len(&element)
                    if element.pos + size != element.end:
                        break
                    values.append(PyUnicode_DecodeUTF8(<const char*>(p + element.pos), size, NULL))
                else:
                    return values
    return value_of(PyBytes_FromStringAndSize(<const char*>(p + start), n))


cdef int key_value(const unsigned char* p, Py_ssize_t start, Py_ssize_t end, dict out) except -1:
    """A KeyValue (or the view's map entry: the same bytes) into ``out``."""
    cdef Cursor c = at(p, start, end)
    cdef uint64_t field
    cdef int wire
    cdef Py_ssize_t key_at = -1, key_end = 0, value_at = -1, value_end = 0
    while next_field(&c, &field, &wire):
        if field == 1 and wire == LEN:
            key_at = take(&c)
            key_end = c.pos
        elif field == 2 and wire == LEN:
            if value_at >= 0:
                raise Unusual("value twice")  # protobuf merges the two AnyValues
            value_at = take(&c)
            value_end = c.pos
        else:
            skip(&c, wire, field)
    key = key_text(p, key_at, key_end - key_at) if key_at >= 0 else ""
    if value_at < 0:
        out[key] = None
    else:
        try:
            out[key] = attribute_value(p, value_at, value_end - value_at)
        except Exception:  # not UTF-8, not an AnyValue: the view names the attribute, or a later duplicate replaces it
            raise Unusual("value")
    return 0


cdef dict attributes_of(const unsigned char* p, Py_ssize_t start, Py_ssize_t end, uint64_t number):
    """The KeyValues of field ``number`` of the message at ``start:end`` (an event's, a resource's)."""
    cdef Cursor c = at(p, start, end)
    cdef uint64_t field
    cdef int wire
    cdef Py_ssize_t at_
    cdef dict attrs = {}
    while next_field(&c, &field, &wire):
        if field == number and wire == LEN:
            at_ = take(&c)
            key_value(p, at_, c.pos, attrs)
        else:
            skip(&c, wire, field)
    return attrs


cdef tuple status(const unsigned char* p, Py_ssize_t start, Py_ssize_t end):
    """(code, message) of a Status."""
    cdef Cursor c = at(p, start, end)
    cdef uint64_t field
    cdef int wire
    cdef Py_ssize_t at_
    code, message = 0, ""
    while next_field(&c, &field, &wire):
        if field == 2 and wire == LEN:
            at_ = take(&c)
            message = text(p, at_, c.pos - at_)
        elif field == 3 and wire == VARINT:
            code = <int32_t>read_varint(&c)  # an enum: int32, negative ones written in ten bytes
        else:
            skip(&c, wire, field)
    return code, message


cdef dict event(const unsigned char* p, Py_ssize_t start, Py_ssize_t end):
    cdef Cursor c = at(p, start, end)
    cdef uint64_t field
    cdef int wire
    cdef Py_ssize_t at_
    name = ""
    while next_field(&c, &field, &wire):
        if field == 2 and wire == LEN:
            at_ = take(&c)
            name = text(p, at_, c.pos - at_)
        else:
            skip(&c, wire, field)
    return {"name": name, "attributes": attributes_of(p, start, end, 3)}


cdef dict span(const unsigned char* p, Py_ssize_t start, Py_ssize_t end, dict resource):
    cdef Cursor c = at(p, start, end)
    cdef uint64_t field
    cdef int wire
    cdef Py_ssize_t at_, n
    cdef bint has_status = False
    cdef uint64_t start_ns = 0, end_ns = 0
    cdef dict attrs = {}
    cdef list events = []
    name = trace_id = span_id = parent = ""
    state = (0, "")
    while next_field(&c, &field, &wire):
        if wire == LEN and (field <= 5 or field == 9 or field == 11 or field == 15):
            at_ = take(&c)
            n = c.pos - at_
            if field == 9:
                key_value(p, at_, c.pos, attrs)
            elif field == 1:
                trace_id = hexid(p, at_, n)
            elif field == 2:
                span_id = hexid(p, at_, n)
            elif field == 4:
                parent = hexid(p, at_, n)
            elif field == 5:
                name = text(p, at_, n)
            elif field == 11:
                events.append(event(p, at_, c.pos))
            elif field == 15:
                if has_status:
                    raise Unusual("status twice")  # protobuf merges the copies
                has_status = True
                state = status(p, at_, c.pos)
        elif wire == I64 and field == 7:
            start_ns = fixed64(&c)
        elif wire == I64 and field == 8:
            end_ns = fixed64(&c)
        else:
            skip(&c, wire, field)
    return {
        "name": name,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "status_code": state[0],
        "status_message": state[1],
        "attributes": attrs,
        "events": events,
        "resource": resource,
    }


cdef list ranges(const unsigned char* p, Py_ssize_t start, Py_ssize_t end, uint64_t number):
    """(start, end) of each length-delimited field ``number`` of the message at ``start:end``, in order."""
    cdef Cursor c = at(p, start, end)
    cdef uint64_t field
    cdef int wire
    cdef Py_ssize_t at_
    cdef list out = []
    while next_field(&c, &field, &wire):
        if field == number and wire == LEN:
            at_ = take(&c)
            out.append((at_, c.pos))
        else:
            skip(&c, wire, field)
    return out


def layout(bytes body):
    """Where the request's parts are, before any span is read: for each resource_spans, (the ranges of its
    resource, [the ranges of each scope_spans' spans]). Raises Unusual on bytes it cannot walk."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(body)
    cdef list out = []
    for rs_start, rs_end in ranges(p, 0, PyBytes_GET_SIZE(body), 1):
        scopes = [ranges(p, s, e, 2) for s, e in ranges(p, rs_start, rs_end, 2)]
        out.append((ranges(p, rs_start, rs_end, 1), scopes))
    return out


def spans(bytes body, list parts, request, view_span, view_attributes):
    """The spans of ``body`` (laid out in ``parts`` by ``layout``), each the dict ``otlp_wire`` makes, one at
    a time. ``request`` is the same body as upb parsed it through the view: a span, or a resource, this does
    not read itself (``Unusual``) is read from it with ``view_span`` (``view_attributes``)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(body)
    cdef Py_ssize_t i, j, k
    for i, (resources, scopes) in enumerate(parts):
        resource = None
        if len(resources) == 1:
            try:
                resource = attributes_of(p, resources[0][0], resources[0][1], 1)
            except Unusual:
                pass
        elif not resources:
            resource = {}
        if resource is None:  # a resource written twice (protobuf merges the copies), or a value left to the view
            resource = view_attributes(request.resource_spans[i].resource.attributes)
        for j, found in enumerate(scopes):
            for k, (start, end) in enumerate(found):
                try:
                    one = span(p, start, end, resource)
                except Unusual:
                    one = view_span(request.resource_spans[i].scope_spans[j].spans[k], resource)
                yield one
