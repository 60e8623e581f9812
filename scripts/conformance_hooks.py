"""schemathesis hooks for scripts/admin-conformance (loaded through SCHEMATHESIS_HOOKS).

- The HTTP publishing API's stream route takes `application/x-ndjson`, a media type schemathesis
  has no serializer for: its bodies are text, so they are sent the way `text/plain` ones are.
- Hypothesis describes a filter's lambda by parsing the source file it comes from; on
  schemathesis' largest module CPython 3.11's `ast.parse` sometimes fails with "AST constructor
  recursion depth mismatch" (a CPython bug, depending on the stack depth at the call), which
  aborts the operation being tested. Only the description is at stake, so such a failure gives
  a generic one instead.
"""

import schemathesis
from hypothesis.internal import lambda_sources

schemathesis.serializer.alias("application/x-ndjson", "text/plain")

_describe = lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description
