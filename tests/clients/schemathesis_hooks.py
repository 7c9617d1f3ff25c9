"""Schemathesis hooks for tests/gateway/http_openapi.rs: tus PATCH bodies are raw bytes
(application/offset+octet-stream), which Schemathesis has no serializer for."""
import schemathesis


@schemathesis.serializer("application/offset+octet-stream")
def tus_chunk(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode()
