"""What a hostile site can send the crawler, checked on the crawler's own guards (a review's reproductions): bodies
that inflate past their cap, IPv6 addresses that lead to IPv4 ones, and URLs a browser reads another host from."""

from __future__ import annotations

import gzip
import ipaddress
import tracemalloc
from http.server import BaseHTTPRequestHandler

import pytest

from askflow.adapters.web_documents import WebsiteLocation, _endpoint
from tests.support.loopback import LoopbackServer

HUGE = b" " * (40 * 2**20)  # 40 MiB of spaces: a few kB once gzipped twice


class Bomb(LoopbackServer):
    """A loopback site whose ``/page`` is HUGE, gzipped ``layers`` times and sent with that Content-Encoding."""

    def __init__(self, layers: int) -> None:
        body = HUGE
        for _ in range(layers):
            body = gzip.compress(body, compresslevel=9)
        self.body, self.encoding = body, ", ".join(["gzip"] * layers)
        super().__init__()

    @property
    def page_url(self) -> str:
        return f"{self.url}/page"

    def _handler(self):
        bomb = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Encoding", bomb.encoding)
                self.send_header("Content-Length", str(len(bomb.body)))
                self.end_headers()
                self.wfile.write(bomb.body)

            def log_message(self, *args):
                pass

        return Handler


@pytest.mark.parametrize(("layers", "status", "content"), [
    (1, 200, HUGE[:1000]),  # one gzip layer: inflated up to the cap
    (2, 406, b""),  # two were never asked for: not inflated at all, and the stored page is kept (not a 404/410)
])
def test_a_compressed_body_never_inflates_past_its_cap(tmp_path, layers, status, content):
    bomb = Bomb(layers)
    location = WebsiteLocation(start=bomb.page_url, cache_dir=tmp_path, max_page_bytes=1000,
                               allowed_networks=("127.0.0.0/8",), rate_limit_s=0)
    tracemalloc.start()
    try:
        answer = location._get(bomb.page_url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        bomb.stop()
    assert peak < 8 * 2**20  # read a bounded step at a time (before: the whole 40 MiB and more)
    assert (answer.status, answer.content) == (status, content)


@pytest.mark.parametrize("address", ["64:ff9b::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe", "2002:a9fe:a9fe::1",
                                     "::a9fe:a9fe", "::127.0.0.1", "::ffff:169.254.169.254", "::1"])
def test_ipv6_forms_of_the_metadata_server_and_loopback_are_refused(tmp_path, address):
    location = WebsiteLocation(start="https://docs.example.com/sitemap.xml", cache_dir=tmp_path)
    assert location._refusal(ipaddress.ip_address(address)) is not None
    assert location._refusal(ipaddress.ip_address("2001:4860:4860::8888")) is None


@pytest.mark.parametrize("url", ["https://evil.example\\@docs.example.com/x", "https://user@docs.example.com/x",
                                 "https://docs.example.com/x y", "https://docs.example.com/\x00x"])
def test_urls_a_browser_reads_another_host_from_are_no_endpoint(url):
    assert _endpoint(url) is None
    assert _endpoint("https://docs.example.com/x") == ("docs.example.com", 443)
