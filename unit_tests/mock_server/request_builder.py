"""What the connector must send: URLs per region/environment and the query of each endpoint."""

from __future__ import annotations

import re
from typing import Dict, Optional
from urllib.parse import parse_qs, urlparse

# (platform, region, playground) -> host. Kustom (formerly Klarna Checkout) has one host per
# environment for every merchant; region applies to Klarna only.
HOSTS = {
    ("klarna", "eu", False): "https://api.klarna.com",
    ("klarna", "na", False): "https://api-na.klarna.com",
    ("klarna", "oc", False): "https://api-oc.klarna.com",
    ("klarna", "eu", True): "https://api.playground.klarna.com",
    ("klarna", "na", True): "https://api-na.playground.klarna.com",
    ("klarna", "oc", True): "https://api-oc.playground.klarna.com",
    ("kustom", "eu", False): "https://api.kustom.co",
    ("kustom", "eu", True): "https://api.playground.kustom.co",
}
SETTLEMENTS = "/settlements/v1"
ORDERS = "/ordermanagement/v1/orders"


class KlarnaRequestBuilder:
    def __init__(self, base_url: str = HOSTS[("klarna", "eu", False)]) -> None:
        self._base_url = base_url.rstrip("/")

    @property
    def base_url(self) -> str:
        return self._base_url

    @classmethod
    def for_region(cls, region: str = "eu", playground: bool = False, platform: str = "klarna") -> "KlarnaRequestBuilder":
        return cls(HOSTS[(platform, region, playground)])

    def payouts_url(self) -> re.Pattern:
        return re.compile(re.escape(f"{self._base_url}{SETTLEMENTS}/payouts") + r"(\?.*)?$")

    def transactions_url(self) -> re.Pattern:
        return re.compile(re.escape(f"{self._base_url}{SETTLEMENTS}/transactions") + r"(\?.*)?$")

    def summary_url(self) -> re.Pattern:
        return re.compile(re.escape(f"{self._base_url}{SETTLEMENTS}/payouts/summary") + r"(\?.*)?$")

    def probe_url(self) -> re.Pattern:
        """The credentials probe: GET /settlements/v1/payouts?size=1, sent once per sync when the
        authenticator is built, before any stream reads (the streams' payouts requests always carry
        a date window)."""
        return re.compile(re.escape(f"{self._base_url}{SETTLEMENTS}/payouts?size=1") + "$")

    def order_url(self, order_id: Optional[str] = None) -> re.Pattern:
        """One order's URL, or (without an id) every order's."""
        tail = re.escape(order_id) if order_id else r"[^/?]+"
        return re.compile(re.escape(f"{self._base_url}{ORDERS}/") + tail + r"$")


def is_probe(url: str) -> bool:
    """Whether `url` is the authenticator's credentials probe (see KlarnaRequestBuilder.probe_url)."""
    return urlparse(url).path.endswith(f"{SETTLEMENTS}/payouts") and query_of(url) == {"size": "1"}


def order_id_of(url: str) -> str:
    return urlparse(url).path.rsplit("/", 1)[-1]


def query_of(url: str) -> Dict[str, str]:
    """The request's query as single values (the connector never repeats a parameter)."""
    parsed = parse_qs(urlparse(url).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), f"repeated query parameter in {url}"
    return {k: v[0] for k, v in parsed.items()}


def offset_of(url: str) -> int:
    return int(query_of(url).get("offset", "0"))


def size_of(url: str) -> Optional[int]:
    size = query_of(url).get("size")
    return int(size) if size is not None else None
