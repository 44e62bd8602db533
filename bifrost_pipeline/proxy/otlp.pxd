# Compiled (setup.py, see native.py): the span mapping's helpers called as C functions within the module,
# not looked up and called as Python objects (about 2 µs of a span's 9). Each stays a Python function too.
import cython

@cython.locals(out=dict, ranks=dict, read_as=tuple)
cpdef object readings(object a)
cpdef object _bool(object v)
cpdef object _number(object v)
cpdef object _int(object v)
cpdef object _content(object v)
cpdef object _json_value(object v)
cpdef object is_genai(object span)
cpdef object _request_type(object span, object r)
cpdef object _provider(object r, object model)
cpdef object _finish_reason(object a, object r)
cpdef object _error_type(object r)
cpdef object _error_message(object span, object r)
cpdef object _tokens(object a, object r)
cpdef object _metadata(object span)
cpdef object request_id(object span, object r=*)
cpdef object _outcome(object rec, object span, object r)
cpdef object _set_present(object rec, object fields)
cpdef object _signed(object v)
cpdef object _may_have_tools(object a)
