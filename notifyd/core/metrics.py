"""Prometheus metrics of the daemon (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NODE_INFO = Gauge(
    "notifyd_node_info",
    "This node (node_name) and its database engine; always 1",
    ["node", "engine"],
)
EVENTS_PUBLISHED = Counter("notifyd_events_published_total", "Events committed and published")
STREAM_CLIENTS = Gauge("notifyd_stream_clients", "Connected stream clients", ["kind"])
STREAM_RESYNCS = Counter("notifyd_stream_resyncs_total", "Stream clients dropped for lagging")
COMMIT_BATCH = Histogram(
    "notifyd_commit_batch_jobs",
    "Write jobs per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
COMMIT_SECONDS = Histogram(
    "notifyd_commit_seconds",
    "Time to run and commit one group",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
PRUNED = Counter("notifyd_events_pruned_total", "Events removed by retention or expiry")
STREAMS_REFUSED = Counter(
    "notifyd_streams_refused_total", "Streams refused with 429: the user's max_streams_per_user"
)
FRAME_ENCODINGS = Counter(
    "notifyd_frame_encodings_total",
    "Stream frames serialized to wire bytes; once per frame and transport, however many "
    "subscribers receive it",
    ["transport"],
)
HOOK_REQUESTS = Counter(
    "notifyd_hook_requests_total",
    "Requests to inbound webhooks' URLs, by template and outcome (published, ignored, or "
    "the error code: unauthorized, invalid, forbidden, …)",
    ["template", "outcome"],
)
ATTACHMENT_UPLOADS = Counter("notifyd_attachment_uploads_total", "Files stored (both doors)")
ATTACHMENT_UPLOAD_BYTES = Counter(
    "notifyd_attachment_upload_bytes_total", "Bytes of the files stored (both doors)"
)
