"""streamdetect.images against real servers: moto S3 and http.server, both on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

import boto3
import pytest
from PIL import Image

from streamdetect.images import http_guard
from streamdetect.images.http_guard import is_public_address
from streamdetect.images import REASONS, ImageError, ImagePolicy, decode_image, fetch_bytes, load_image


def png(mode: str = "RGB", size: tuple[int, int] = (8, 6), color: object = None) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expect_error(ref: str, policy: ImagePolicy, reason: str, *, load: bool = False) -> ImageError:
    """Resolve ``ref``, expect ``reason``, and check the detail names the reference without
    copying an inline payload into it."""
    with pytest.raises(ImageError) as info:
        (load_image if load else fetch_bytes)(ref, policy)
    err = info.value
    assert err.reason == reason, err
    if ref.startswith(("data:", "base64:")):
        assert ref[:20] in err.detail
        if len(ref) > 120:
            assert ref not in err.detail and len(err.detail) < 400
    else:
        assert ref in err.detail
    return err


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def s3(s3_server: str) -> Iterator[tuple[object, str, ImagePolicy]]:
    """A fresh bucket on the session's S3 server: (boto3 client, bucket, policy)."""
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = f"images-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket, ImagePolicy(s3_endpoint=s3_server, s3_region="us-east-1", timeout_s=5)


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}
    requests = 0  # requests that reached the server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        type(self).requests += 1
        try:
            if self.path == "/endless":  # no Content-Length, never ends: only a capped reader returns
                self.send_response(200)
                self.end_headers()
                while True:
                    self.wfile.write(b"\0" * 65536)
            elif self.path == "/trickle":  # a byte at a time, each well inside the socket timeout
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            elif self.path == "/redirect-with-endless-body":  # 302 to a 404, with gigabytes on the way
                self.send_response(302)
                self.send_header("Location", "/missing-after-redirect")
                self.end_headers()
                for _ in range(16384):  # up to 1 GiB, unless the reader hangs up first
                    self.wfile.write(b"\0" * 65536)
            elif self.path.startswith("/redirect?to="):
                self.send_response(302)
                self.send_header("Location", unquote(self.path.partition("=")[2]))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path.startswith("/slow-redirect/"):  # each hop well inside the socket timeout
                time.sleep(0.4)
                self.send_response(302)
                self.send_header("Location", f"/slow-redirect/{int(self.path.rsplit('/', 1)[1]) + 1}")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/to-file":
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.end_headers()
            else:
                status, body = self.routes.get(self.path, (404, b"no such thing"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up on purpose


def serve_http(host: str) -> Iterator[str]:
    _Handler.routes = {
        "/ok.png": (200, png("RGB", (5, 4), (10, 20, 30))),
        "/forbidden.png": (403, b"denied"),
        "/broken.png": (200, b"this is not an image"),
        "/big.png": (200, b"\0" * 5000),
    }
    server = ThreadingHTTPServer((host, 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    yield from serve_http("127.0.0.1")


# A loopback alias the guard is told to take for a public address (see `pretend_public`), so a
# redirect's first hop is allowed and the hop it redirects to is what the guard judges.
PRETEND_PUBLIC = "127.0.0.2"


@pytest.fixture(scope="module")
def public_url() -> Iterator[str]:
    # On Linux all of 127/8 answers on loopback; CI and the machines this project runs on are Linux.
    yield from serve_http(PRETEND_PUBLIC)


@pytest.fixture
def pretend_public(monkeypatch: pytest.MonkeyPatch) -> None:
    real = http_guard.is_public_address
    monkeypatch.setattr(http_guard, "is_public_address", lambda address: address == PRETEND_PUBLIC or real(address))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """An open loopback port that never accepts: a connection to it would wait in its backlog."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as sock:
        sock.setblocking(False)
        yield sock


def assert_never_connected(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()[0].close()


@pytest.fixture
def trickler() -> Iterator[Callable[..., str]]:
    """A raw server: call it with ``head``, sent at once, and ``slow``, sent a byte every 0.3 s."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)  # if the client never connects, the thread still ends

    def serve(head: bytes, slow: bytes) -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)  # the request
            conn.sendall(head)
            for byte in slow:
                if stop.wait(0.3):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the client gave up, as it should
                    return

    def start(head: bytes, slow: bytes) -> str:
        threads.append(threading.Thread(target=serve, args=(head, slow), daemon=True))
        threads[-1].start()
        return f"http://127.0.0.1:{server.getsockname()[1]}/slow.png"

    yield start
    stop.set()
    server.close()
    for thread in threads:
        thread.join(5)


# The test server is on loopback, which the SSRF guard refuses unless allow_private_hosts is set.
HTTP = ImagePolicy(allow_http=True, allow_private_hosts=True, timeout_s=5)


# ---------------------------------------------------------------- the error type


def test_image_error_carries_reason_detail_and_pickles() -> None:
    err = ImageError("not_found", "no such object")
    assert (err.reason, err.detail) == ("not_found", "no such object")
    assert "not_found" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.detail) == (err.reason, err.detail)
    with pytest.raises(ValueError):
        ImageError("nope", "x")
    assert len(set(REASONS)) == 7


# ---------------------------------------------------------------- inline


def test_inline_data_uri_and_base64_prefix() -> None:
    data = png("RGB", (3, 2), (1, 2, 3))
    assert fetch_bytes(data_uri(data), ImagePolicy()) == data
    assert fetch_bytes("base64:" + base64.b64encode(data).decode(), ImagePolicy()) == data
    wrapped = base64.encodebytes(data).decode()  # MIME style, with line breaks
    assert fetch_bytes(f"data:image/png;base64,{wrapped}", ImagePolicy()) == data
    img = load_image(data_uri(data), ImagePolicy())
    assert (img.mode, img.size, img.getpixel((0, 0))) == ("RGB", (3, 2), (1, 2, 3))


@pytest.mark.parametrize(
    "ref",
    [
        "data:image/png;base64,@@not base64@@" + "A" * 200,
        "data:text/plain;base64," + base64.b64encode(png()).decode(),
        "data:image/png," + "A" * 200,  # not base64-encoded
        "base64:!!!!",
    ],
)
def test_inline_malformed_is_bad_reference(ref: str) -> None:
    expect_error(ref, ImagePolicy(), "bad_reference")


def test_inline_oversize_is_rejected_before_decoding() -> None:
    policy = ImagePolicy(max_bytes=1000)
    expect_error(data_uri(b"\0" * 1001), policy, "too_large")
    # Not even valid base64: only the length was looked at, so the verdict is size, not syntax.
    expect_error("data:image/png;base64," + "!" * 5000, policy, "too_large")
    assert len(fetch_bytes(data_uri(b"\0" * 1000), policy)) == 1000


# ---------------------------------------------------------------- s3


def test_s3_ok(s3: tuple) -> None:
    client, bucket, policy = s3
    data = png("RGB", (4, 4), (200, 100, 50))
    client.put_object(Bucket=bucket, Key="uploads/a b?c.png", Body=data)
    assert fetch_bytes(f"s3://{bucket}/uploads/a b?c.png", policy) == data
    assert load_image(f"s3://{bucket}/uploads/a b?c.png", policy).getpixel((3, 3)) == (200, 100, 50)


def test_s3_missing_key_and_bucket_are_not_found(s3: tuple) -> None:
    _, bucket, policy = s3
    expect_error(f"s3://{bucket}/no/such/key.png", policy, "not_found")
    expect_error(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/k.png", policy, "not_found")


def test_s3_denied_by_bucket_policy_is_forbidden(s3_server: str, s3: tuple) -> None:
    # moto enforces a bucket policy's explicit Deny (ignoring its Principal), answering 403
    # with an empty body, so botocore reports the code as "403", not "AccessDenied".
    client, _, policy = s3
    bucket = f"private-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="secret/a.png", Body=png())
    client.put_object(Bucket=bucket, Key="public/a.png", Body=png())
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/secret/*"}
        ],
    }
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
    expect_error(f"s3://{bucket}/secret/a.png", policy, "forbidden")
    assert fetch_bytes(f"s3://{bucket}/public/a.png", policy) == png()


def test_s3_oversize_is_too_large_from_content_length(s3: tuple) -> None:
    client, bucket, policy = s3
    client.put_object(Bucket=bucket, Key="big.bin", Body=b"\0" * 2001)
    small = ImagePolicy(max_bytes=2000, s3_endpoint=policy.s3_endpoint, s3_region=policy.s3_region)
    err = expect_error(f"s3://{bucket}/big.bin", small, "too_large")
    assert "2001 bytes" in err.detail  # the declared length, known before any body was read


def test_s3_unreachable_endpoint() -> None:
    policy = ImagePolicy(s3_endpoint=f"http://127.0.0.1:{closed_port()}", s3_region="us-east-1", timeout_s=1)
    expect_error("s3://bucket/key.png", policy, "unreachable")


@pytest.mark.parametrize("ref", ["s3://bucket-only", "s3://bucket/", "s3:///key"])
def test_s3_malformed_is_bad_reference(ref: str, s3: tuple) -> None:
    expect_error(ref, s3[2], "bad_reference")


def test_s3_client_is_built_once_across_threads(s3: tuple) -> None:
    from streamdetect.images.fetch import _s3_client

    policy = ImagePolicy(s3_endpoint=s3[2].s3_endpoint, s3_region="eu-west-3")
    clients: list[object] = []
    threads = [threading.Thread(target=lambda: clients.append(_s3_client(policy))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in clients}) == 1
    assert _s3_client(ImagePolicy(s3_endpoint=s3[2].s3_endpoint, s3_region="us-east-1")) is not clients[0]


# ---------------------------------------------------------------- http(s)


def test_http_ok_when_allowed(http_url: str) -> None:
    img = load_image(f"{http_url}/ok.png", HTTP)
    assert (img.size, img.getpixel((0, 0))) == ((5, 4), (10, 20, 30))


def test_http_refused_by_default(http_url: str) -> None:
    expect_error(f"{http_url}/ok.png", ImagePolicy(), "not_allowed")


def test_http_status_codes(http_url: str) -> None:
    expect_error(f"{http_url}/forbidden.png", HTTP, "forbidden")
    expect_error(f"{http_url}/missing.png", HTTP, "not_found")


def test_http_oversize_with_and_without_content_length(http_url: str) -> None:
    policy = ImagePolicy(allow_http=True, allow_private_hosts=True, max_bytes=4000, timeout_s=5)
    expect_error(f"{http_url}/big.png", policy, "too_large")
    started = time.monotonic()
    expect_error(f"{http_url}/endless", policy, "too_large")  # returns only because reading stops
    assert time.monotonic() - started < 5


def test_http_unreachable_and_slow(http_url: str) -> None:
    expect_error(f"http://127.0.0.1:{closed_port()}/a.png", HTTP, "unreachable")
    started = time.monotonic()
    err = expect_error(f"{http_url}/trickle", ImagePolicy(allow_http=True, allow_private_hosts=True, timeout_s=0.5),
                       "unreachable")
    assert time.monotonic() - started < 3 and "timed out" in err.detail


def test_loopback_and_private_hosts_are_refused_by_default(http_url: str) -> None:
    """The SSRF guard: the same server that serves /ok.png under HTTP is refused without
    allow_private_hosts, by address, whatever name points there, and before any request."""
    served = _Handler.requests
    guarded = ImagePolicy(allow_http=True, timeout_s=5)
    err = expect_error(f"{http_url}/ok.png", guarded, "not_allowed")
    assert "127.0.0.1" in err.detail and "allow_private_hosts" in err.detail
    by_name = http_url.replace("127.0.0.1", "localhost")
    expect_error(f"{by_name}/ok.png", guarded, "not_allowed")
    assert _Handler.requests == served  # refused before connecting (see the tests below)


# Notations for loopback, link-local (cloud metadata) and "this host" that a URL may use.
PRIVATE_HOSTS = ["127.0.0.1", "127.1", "0x7f.0.0.1", "2130706433", "017700000001", "localhost", "[::1]",
                 "[::ffff:127.0.0.1]", "169.254.169.254", "[fe80::1]", "0.0.0.0", "[::]", "10.0.0.1"]
GUARDED = ImagePolicy(allow_http=True, timeout_s=5)


def refusal(ref: str, port: int) -> str:
    """The not_allowed detail for ``ref``, with the port (which the URL itself names) blanked."""
    err = expect_error(ref, GUARDED, "not_allowed")
    assert "allow_private_hosts" in err.detail
    for echo in ("refused", "Errno", "timed out", "reset", "retry"):  # nothing a connection said
        assert echo not in err.detail
    return err.detail.replace(str(port), "PORT")


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
def test_private_targets_are_refused_before_connecting(host: str, listener: socket.socket) -> None:
    """An open and a closed port read the same, so dead letters cannot scan internal hosts."""
    open_port, shut_port = listener.getsockname()[1], closed_port()
    started = time.monotonic()
    seen_open = refusal(f"http://{host}:{open_port}/ok.png", open_port)
    seen_closed = refusal(f"http://{host}:{shut_port}/ok.png", shut_port)
    assert seen_open == seen_closed
    assert time.monotonic() - started < 2  # no connect attempt waited on 169.254.169.254
    assert_never_connected(listener)


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
def test_redirects_to_private_targets_are_refused_before_connecting(
    host: str, public_url: str, pretend_public: None, listener: socket.socket
) -> None:
    open_port, shut_port = listener.getsockname()[1], closed_port()

    def via_redirect(port: int) -> str:
        return refusal(f"{public_url}/redirect?to={quote(f'http://{host}:{port}/ok.png', safe='')}", port)

    assert via_redirect(open_port) == via_redirect(shut_port)
    assert_never_connected(listener)


def test_redirect_to_a_public_target_is_followed(public_url: str, pretend_public: None) -> None:
    assert fetch_bytes(f"{public_url}/redirect?to={quote(public_url + '/ok.png', safe='')}", GUARDED) == \
        _Handler.routes["/ok.png"][1]


def test_loopback_notations_reach_the_server_when_private_hosts_are_allowed(http_url: str) -> None:
    port = http_url.rsplit(":", 1)[1]
    for host in ("127.1", "0x7f.0.0.1", "2130706433"):
        assert fetch_bytes(f"http://{host}:{port}/ok.png", HTTP) == _Handler.routes["/ok.png"][1]


def test_connected_peer_is_checked_again(http_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name looked public when resolved; the peer reached is checked too."""
    served, real, checks = _Handler.requests, http_guard.is_public_address, []

    def first_answer_public(address: str) -> bool:
        checks.append(address)
        return len(checks) == 1 or real(address)

    monkeypatch.setattr(http_guard, "is_public_address", first_answer_public)
    expect_error(f"{http_url}/ok.png", GUARDED, "not_allowed")
    assert checks == ["127.0.0.1", "127.0.0.1"] and _Handler.requests == served


def fetch_thread_alive() -> bool:
    return any(t.name == "streamdetect-fetch-deadline" for t in threading.enumerate())


@pytest.mark.parametrize(("head", "slow"), [(b"", b"HTTP/1.1 200 OK\r\n\r\n"),
                                           (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 100 + b"\r\n\r\n")],
                         ids=["status-line", "headers"])
def test_deadline_covers_status_line_and_headers(head: bytes, slow: bytes, trickler: Callable[..., str]) -> None:
    url = trickler(head, slow)
    started = time.monotonic()
    err = expect_error(url, ImagePolicy(allow_http=True, allow_private_hosts=True, timeout_s=1), "unreachable")
    assert 0.9 < time.monotonic() - started < 3
    assert "timed out after 1s" in err.detail
    assert not fetch_thread_alive()


def test_deadline_covers_redirects(http_url: str) -> None:
    started = time.monotonic()  # ten hops of 0.4 s each, every one inside the socket timeout
    err = expect_error(f"{http_url}/slow-redirect/0", ImagePolicy(allow_http=True, allow_private_hosts=True,
                                                                  timeout_s=1), "unreachable")
    assert time.monotonic() - started < 3 and "timed out" in err.detail


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fd00::1", "fe80::1%eth0",
                                     "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                                     # IPv6 that routes to IPv4 inside: NAT64, local NAT64, 6to4, Teredo
                                     "64:ff9b::a00:5", "64:ff9b::a9fe:a9fe", "64:ff9b:1::808:808", "2002:7f00:1::1",
                                     "2001:0:4136:e378:8000:63bf:3fff:fdd2"])
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address: str) -> None:
    assert is_public_address(address)


def test_http_redirect_to_disallowed_scheme(http_url: str) -> None:
    err = expect_error(f"{http_url}/to-file", HTTP, "not_allowed")
    assert "file:///etc/passwd" in err.detail


def test_http_credentials_in_url_are_refused_and_not_echoed(http_url: str) -> None:
    ref = http_url.replace("http://", "http://user:hunter2@") + "/ok.png"
    with pytest.raises(ImageError) as info:
        fetch_bytes(ref, HTTP)
    assert info.value.reason == "bad_reference"
    assert "hunter2" not in info.value.detail and "user:***@127.0.0.1" in info.value.detail


def test_undecodable_download_names_the_reference(http_url: str) -> None:
    expect_error(f"{http_url}/broken.png", HTTP, "undecodable", load=True)


# ---------------------------------------------------------------- file


def test_file_refused_by_default_and_ok_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "pic one.png"
    path.write_bytes(png("L", (2, 2), 7))
    ref = path.as_uri()
    expect_error(ref, ImagePolicy(), "not_allowed")
    allowed = ImagePolicy(allow_file=True, file_root=tmp_path)
    assert fetch_bytes(ref, allowed) == path.read_bytes()
    assert load_image(ref, allowed).getpixel((0, 0)) == (7, 7, 7)
    expect_error((tmp_path / "missing.png").as_uri(), allowed, "not_found")
    expect_error(str(path), allowed, "bad_reference")  # a bare path is not a file:// reference


def test_file_oversize(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"\0" * 101)
    expect_error(path.as_uri(), ImagePolicy(allow_file=True, file_root=tmp_path, max_bytes=100), "too_large")


def test_file_without_a_root_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png())
    err = expect_error(path.as_uri(), ImagePolicy(allow_file=True), "not_allowed")
    assert "set file_root" in err.detail


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """tmp_path/root holds in.png; tmp_path/secret.png is outside it."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "in.png").write_bytes(png("RGB", (2, 2), (1, 2, 3)))
    (tmp_path / "secret.png").write_bytes(png("RGB", (2, 2), (9, 9, 9)))
    return tmp_path / "root"


def file_policy(root: Path | str) -> ImagePolicy:
    return ImagePolicy(allow_file=True, file_root=Path(root))


@pytest.mark.parametrize("suffix", ["/../secret.png", "/%2e%2e/secret.png",
                                    "/../../../../../../etc/passwd", "/./../root/../secret.png"])
def test_file_traversal_out_of_the_root_is_refused(root: Path, suffix: str) -> None:
    err = expect_error(f"file://{root}{suffix}", file_policy(root), "not_allowed")
    assert "outside file_root" in err.detail


def test_file_symlinks_are_followed_and_must_stay_inside(root: Path) -> None:
    (root / "out.png").symlink_to(root.parent / "secret.png")
    (root / "zero").symlink_to("/dev/zero")
    (root / "alias.png").symlink_to("in.png")
    (root.parent / "outside").mkdir()
    (root.parent / "outside" / "x.png").write_bytes(png())
    (root / "sub").symlink_to(root.parent / "outside", target_is_directory=True)
    for name in ("out.png", "zero", "sub/x.png"):
        expect_error((root / name).as_uri(), file_policy(root), "not_allowed")
    assert fetch_bytes((root / "alias.png").as_uri(), file_policy(root)) == (root / "in.png").read_bytes()
    # A root given through a symlink is resolved too.
    (root.parent / "root-link").symlink_to(root, target_is_directory=True)
    assert fetch_bytes((root / "in.png").as_uri(), file_policy(root.parent / "root-link"))


def test_file_fifo_without_a_writer_returns_at_once(root: Path) -> None:
    fifo = root / "pipe.png"
    os.mkfifo(fifo)
    errors: list[ImageError] = []

    def fetch() -> None:
        with pytest.raises(ImageError) as info:
            fetch_bytes(fifo.as_uri(), file_policy(root))
        errors.append(info.value)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(2)
    if thread.is_alive():  # release the blocked open() so the test run can go on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(2)
        pytest.fail("fetching a FIFO with no writer blocked")
    assert errors[0].reason == "not_allowed" and "not a regular file" in errors[0].detail


def test_file_devices_and_folders_are_refused(root: Path) -> None:
    expect_error("file:///dev/zero", file_policy(root), "not_allowed")  # outside the root
    err = expect_error("file:///dev/zero", file_policy("/dev"), "not_allowed")  # inside, but a device
    assert "not a regular file" in err.detail
    (root / "folder").mkdir()
    expect_error((root / "folder").as_uri(), file_policy(root), "not_allowed")
    expect_error(root.as_uri(), file_policy(root), "not_allowed")


def test_file_escapes_are_decoded_once(root: Path) -> None:
    path = root / "a%41 b.png"  # as a URI: a%2541%20b.png
    path.write_bytes(png())
    assert fetch_bytes(path.as_uri(), file_policy(root)) == path.read_bytes()


# ---------------------------------------------------------------- references


@pytest.mark.parametrize("ref", ["ftp://example.com/a.png", "gopher://x/y", "/etc/passwd", "a.png", "https://", "  "])
def test_unknown_or_malformed_reference(ref: str) -> None:
    with pytest.raises(ImageError) as info:
        fetch_bytes(ref, ImagePolicy())
    assert info.value.reason == "bad_reference"
    assert repr(ref) in info.value.detail


# ---------------------------------------------------------------- decoding


def test_oversize_pixels_declared_by_a_small_png() -> None:
    huge = png("1", (20000, 20000))  # ~50 KB on disk, 400 Mpixel decoded
    assert len(huge) < 100_000
    err = expect_error(data_uri(huge), ImagePolicy(), "too_large", load=True)
    assert "pixels" in err.detail
    # Under Pillow's own bomb limit but over the policy's: the policy check is what rejects it.
    with pytest.raises(ImageError) as info:
        decode_image(png("1", (5000, 5000)), ImagePolicy())
    assert info.value.reason == "too_large" and "5000x5000" in info.value.detail


def test_pixel_limit_is_checked_before_pixels_are_read() -> None:
    header_only = png("RGB", (64, 64))[:60]  # would be undecodable if load() were reached
    with pytest.raises(ImageError) as info:
        decode_image(header_only, ImagePolicy(max_pixels=64 * 63))
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, png("RGB", (64, 64), (1, 2, 3))[:-30]],
    ids=["empty", "text", "corrupt-png", "truncated-png"],
)
def test_corrupt_and_truncated_are_undecodable(data: bytes) -> None:
    with pytest.raises(ImageError) as info:
        decode_image(data, ImagePolicy())
    assert info.value.reason == "undecodable"


def test_formats_outside_the_allowlist_are_undecodable() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "ICO")
    with pytest.raises(ImageError) as info:
        decode_image(buf.getvalue(), ImagePolicy())
    assert info.value.reason == "undecodable"


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # transparent flattens onto white
        ("LA", (100, 255), (100, 100, 100)),
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("I;16", 40000, (156, 156, 156)),  # 16-bit grey scaled to 8 bits, not clipped to white
        ("P", 3, None),
    ],
)
def test_modes_come_back_rgb(mode: str, color: object, expected: tuple[int, int, int] | None) -> None:
    img = decode_image(png(mode, (3, 3), color), ImagePolicy())
    assert img.mode == "RGB" and img.size == (3, 3)
    if expected is not None:
        assert img.getpixel((1, 1)) == expected


def test_a_redirect_body_is_never_read(http_url: str) -> None:
    """urllib reads a redirect's whole body before it follows it; a server could stream gigabytes."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = expect_error(f"{http_url}/redirect-with-endless-body", ImagePolicy(allow_http=True, allow_private_hosts=True,
                                                                           timeout_s=2), "not_found")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "404" in err.detail and grown_mb < 50
