"""A raw HTTP/2 gRPC client (Debian's python3-h2) for what grpcio hides: a client that never
reads. It announces a stream window of `window` bytes (0: the server may send no data at
all) and never sends a WINDOW_UPDATE, so everything the server writes stays with the server."""
import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


def grpc_frame(message_bytes):
    """gRPC's length-prefixed message: no compression, big-endian length."""
    return struct.pack(">BI", 0, len(message_bytes)) + message_bytes


class RawGrpcClient:
    def __init__(self, port, window=0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.authority = "%s:%d" % (host, port)
        self.headers = {}   # stream id -> response headers
        self.trailers = {}  # stream id -> trailers (grpc-status, grpc-message)
        self.resets = set()  # streams the server reset
        self.data = {}      # stream id -> bytes received
        self.unacknowledged = {}  # stream id -> bytes received and not yet given back as window
        self.closed = False
        self.flush()

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def start(self, method, message_bytes, metadata=()):
        """Opens a call to /package.Service/Method with one request message; its stream id."""
        stream = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", method), (":authority", self.authority),
                   ("content-type", "application/grpc"), ("te", "trailers")] + list(metadata)
        self.conn.send_headers(stream, headers)
        self.conn.send_data(stream, grpc_frame(message_bytes), end_stream=True)
        self.flush()
        return stream

    def pump(self, seconds):
        """Reads what the server sends for `seconds`, returning no window for it (that is
        acknowledge's job)."""
        end = time.time() + seconds
        while time.time() < end and not self.closed:
            self.sock.settimeout(max(0.01, min(0.2, end - time.time())))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            for event in self.conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    self.headers[event.stream_id] = dict(event.headers)
                elif isinstance(event, h2.events.TrailersReceived):
                    self.trailers[event.stream_id] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    self.data[event.stream_id] = self.data.get(event.stream_id, b"") + event.data
                    self.unacknowledged[event.stream_id] = (self.unacknowledged.get(event.stream_id, 0) +
                                                            event.flow_controlled_length)
                elif isinstance(event, h2.events.StreamReset):
                    self.resets.add(event.stream_id)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.closed = True
            self.flush()

    def acknowledge(self, stream, most):
        """Returns up to `most` bytes of window for data received on `stream` (a slow reader)."""
        n = min(most, self.unacknowledged.get(stream, 0))
        if n > 0 and not self.closed:
            self.conn.acknowledge_received_data(n, stream)
            self.unacknowledged[stream] -= n
            self.flush()

    def status(self, stream):
        """grpc-status of a finished stream (from its trailers, or from headers-only answers)."""
        for source in (self.trailers, self.headers):
            if stream in source and "grpc-status" in source[stream]:
                return int(source[stream]["grpc-status"]), source[stream].get("grpc-message", "")
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
