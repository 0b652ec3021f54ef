"""HTTP, WebSocket and SSE front end: a thin layer over :mod:`notifyd.core`."""
