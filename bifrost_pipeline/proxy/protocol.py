"""The OpenAI-compatible surface of the proxy: the endpoints it serves (and the request type each one
records), and the client headers that carry secrets."""

# The OpenAI-compatible endpoints the proxy serves -> request_type of the record.
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/audio/speech": "speech",
    "/v1/audio/transcriptions": "transcription",
    "/v1/images/generations": "image",
}
DEFAULT_ENDPOINT = {v: k for k, v in ENDPOINTS.items()}

# Request headers that hold secrets: never forwarded to a provider as they are, never logged, never landed.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "set-cookie", "x-goog-api-key"}
)
