"""Holds one notifications WebSocket and waits for a notification (nix/tests/vm-multinode.nix).

    ws-listen URL HOST MARKER CONNECTED_FILE OUT_FILE

Connects to URL (an application node's daphne) with Host/Origin HOST, as the balancer would,
touches CONNECTED_FILE once the socket is open, then waits up to 60 s for a message containing
MARKER and writes it to OUT_FILE (exit 0); exit 1 when none came.
"""

from __future__ import annotations

import pathlib
import sys
import time

import websocket


def main() -> int:
    url, host, marker, connected_file, out_file = sys.argv[1:6]
    ws = websocket.create_connection(url, timeout=5, host=host, origin=f"http://{host}")
    time.sleep(1)  # the consumer joins the user's group just after accepting
    pathlib.Path(connected_file).touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            message = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        if marker in message:
            pathlib.Path(out_file).write_text(message)
            ws.close()
            return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
