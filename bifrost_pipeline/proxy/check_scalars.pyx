# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The scalar checks of a record's fields in C, for the checks ``compiled_schema`` writes (see ``native``).

A check of one set of keys (``compiled_schema._by_shape``) reads every value of a record at once into a
tuple; the values whose schema is a plain scalar one (types, a string enum, bounds, lengths) are checked
here in one call, a field after another, each as the generated Python code would check it; date-times,
patterns, objects and arrays stay in the generated code. Interpreted, each such field costs a few hundred
instructions of bytecode; here a few dozen. ``test_compiled_schema`` checks both ways against the
reference on generated records and on every keyword alone and together.
"""

from cpython.object cimport PyObject_RichCompareBool, Py_GE, Py_LE, Py_GT, Py_LT
from cpython.set cimport PySet_Contains
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM


cdef extern from "Python.h":
    Py_ssize_t PyUnicode_GET_LENGTH(object o)


cdef enum:
    STR = 1
    BOOL = 2
    INT = 4
    FLOAT = 8
    NONE = 16  # null passes every keyword (the schema allows it and has no enum)

CLASS_BITS = {str: STR, bool: BOOL, int: INT, float: FLOAT, type(None): NONE}


cdef class Field:
    """What one field's schema asks of its value. ``classes``: the bits of the classes it may be (of
    CLASS_BITS); ``enum``: the strings it may be, or None; bounds and lengths, or None."""

    cdef int classes
    cdef object enum, minimum, maximum, exclusive_minimum, exclusive_maximum
    cdef Py_ssize_t min_length, max_length

    def __init__(self, int classes, enum=None, minimum=None, maximum=None, exclusive_minimum=None,
                 exclusive_maximum=None, min_length=None, max_length=None):
        self.classes = classes
        self.enum = frozenset(enum) if enum is not None else None
        self.minimum, self.maximum = minimum, maximum
        self.exclusive_minimum, self.exclusive_maximum = exclusive_minimum, exclusive_maximum
        self.min_length = -1 if min_length is None else min_length
        self.max_length = -1 if max_length is None else max_length


cdef inline bint within(object value, object bound, int op) except -1:
    return bound is None or PyObject_RichCompareBool(value, bound, op)


cdef bint field_ok(Field f, object value) except -1:
    cdef type cls = type(value)
    cdef int bit
    if cls is str:
        bit = STR
    elif value is None:
        return (f.classes & NONE) != 0
    elif cls is int:
        bit = INT
    elif cls is float:
        bit = FLOAT
    elif cls is bool:
        bit = BOOL
    else:
        return False
    if not (f.classes & bit):
        return False
    if f.enum is not None and (bit != STR or not PySet_Contains(f.enum, value)):
        return False
    if bit == INT or bit == FLOAT:  # a NaN fails the bounds here; the reference decides (it passes there)
        if not (within(value, f.minimum, Py_GE) and within(value, f.maximum, Py_LE)
                and within(value, f.exclusive_minimum, Py_GT) and within(value, f.exclusive_maximum, Py_LT)):
            return False
    elif bit == STR:
        if f.min_length >= 0 and PyUnicode_GET_LENGTH(value) < f.min_length:
            return False
        if f.max_length >= 0 and PyUnicode_GET_LENGTH(value) > f.max_length:
            return False
    return True


def scalars_ok(tuple values, tuple fields):
    """Whether each value passes its field (``fields[i]`` for ``values[i]``; None: checked elsewhere)."""
    cdef Py_ssize_t i
    cdef object f
    for i in range(PyTuple_GET_SIZE(fields)):
        f = <object>PyTuple_GET_ITEM(fields, i)
        if f is not None and not field_ok(<Field>f, <object>PyTuple_GET_ITEM(values, i)):
            return False
    return True
