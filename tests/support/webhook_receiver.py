"""A real HTTP server on loopback that records the webhooks it gets and answers as a test scripts it."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from tests.support.quiet_server import QuietHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """`answers`: the status of each request in turn (the last one repeats); `redirect_to` the Location of a 3xx;
    `hang`: answer nothing until the receiver closes (a receiver that never answers, for as long as the test runs)."""

    def __init__(
        self,
        answers: list[int] | None = None,
        redirect_to: str = "",
        hang: bool = False,
        tls: ssl.SSLContext | None = None,
    ):
        self.answers, self.redirect_to, self.hang = list(answers or [200]), redirect_to, hang
        self.received: list[Received] = []
        self._arrived = threading.Condition()  # notified as each request is recorded
        self._closing = threading.Event()
        self.server_names: list[str | None] = []  # the TLS SNI of each handshake
        self._lock = threading.Lock()
        self.server = QuietHTTPServer(("127.0.0.1", 0), self._handler())
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # a hanging answer ends: no request thread outlives the test by much
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int, timeout: float = 20.0) -> list[Received]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.received) >= count, timeout)
        assert len(self.received) >= count, f"{len(self.received)} webhooks received, {count} expected"
        return self.received

    def _record(self, call: Received) -> None:
        with self._arrived:
            self.received.append(call)
            self._arrived.notify_all()

    def _answer(self) -> int:
        with self._lock:
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(Received(self.path, headers, body, time.monotonic()))
                if receiver.hang:
                    receiver._closing.wait()
                    return
                status = receiver._answer()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def self_signed(folder, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for `name` only: (the server's context, a client context that trusts it)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))
