# Compiled (setup.py, see native.py): the span mapping's helpers called as C functions within the module,
# not looked up and called as Python objects (about 2 µs of a span's 9). Each stays a Python function too.
# The spans, their attributes and readings are dicts: typed so, d.get(k) and d[k] are direct C calls, not an
# attribute lookup and a call (about 500 instructions each); a non-dict argument raises TypeError.
import cython

@cython.locals(out=dict, ranks=dict, read_as=tuple, read_as_of=dict)
cpdef object readings(dict a)
cpdef object _bool(object v)
cpdef object _number(object v)
cpdef object _int(object v)
cpdef object _content(object v)
cpdef object _json_value(object v)
cpdef object is_genai(dict span)
cpdef object _request_type(dict span, dict r)
cpdef object _provider(dict r, object model)
cpdef object _finish_reason(dict a, dict r)
cpdef object _error_type(dict r)
cpdef object _error_message(dict span, dict r)
cpdef object _tokens(dict a, dict r)
cpdef object _metadata(dict span)
cpdef object request_id(object span, object r=*)
cpdef object _outcome(dict rec, dict span, dict r)
cpdef object _set_present(dict rec, dict fields)
cpdef object _signed(object v)
cpdef object _may_have_tools(dict a)
@cython.locals(rec=dict)
cpdef object _record(dict span, dict a, dict r, object customer_id, object content, object pricing)
