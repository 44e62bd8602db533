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
    "/v1/images/edits": "image",
    "/v1/videos": "video",
}
DEFAULT_ENDPOINT = {v: k for k, v in ENDPOINTS.items() if k != "/v1/images/edits"}

# The calls on a video the provider made (GET): its status and its content. They carry no model; the
# record's endpoint is the template (so it names no id) and the id goes to its video_id.
VIDEO_PREFIX = "/v1/videos/"
VIDEO_STATUS = "/v1/videos/{video_id}"
VIDEO_CONTENT = "/v1/videos/{video_id}/content"

# Answers passed on as they come, byte for byte: speech audio and a video's content.
RAW_STREAM_ENDPOINTS = frozenset({"/v1/audio/speech", VIDEO_CONTENT})


def video_call(path: str) -> tuple[str, str] | None:
    """(endpoint template, video id) of a video status or content path, else None."""
    if not path.startswith(VIDEO_PREFIX):
        return None
    rest = path[len(VIDEO_PREFIX) :]
    video_id, _, tail = rest.partition("/")
    if not video_id or tail not in ("", "content"):
        return None
    return (VIDEO_CONTENT if tail else VIDEO_STATUS), video_id


# Request headers that hold secrets: never forwarded to a provider as they are, never logged, never landed.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "set-cookie", "x-goog-api-key"}
)
