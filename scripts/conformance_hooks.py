"""schemathesis hooks for scripts/admin-conformance (loaded through SCHEMATHESIS_HOOKS).

The HTTP publishing API's stream route takes `application/x-ndjson`, a media type schemathesis
has no serializer for: its bodies are text, so they are sent the way `text/plain` ones are.
"""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
