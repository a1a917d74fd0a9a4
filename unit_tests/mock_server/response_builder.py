"""Klarna responses built from the OpenAPI file's own examples, so a test row looks like Klarna's."""

from __future__ import annotations

import copy
import functools
import itertools
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional

import yaml

from reference import REFERENCE_DIR


@functools.lru_cache(maxsize=None)
def _components(filename: str) -> Mapping[str, Any]:
    return yaml.safe_load((REFERENCE_DIR / filename).read_text())["components"]["schemas"]


def openapi_example(component: str, filename: str = "klarna-settlements-api.openapi.yml") -> Dict[str, Any]:
    """One object with every property of `component` set to its OpenAPI example (or a typed stand-in)."""
    schemas = _components(filename)

    def build(node: Mapping[str, Any]) -> Any:
        if "$ref" in node:
            return build(schemas[node["$ref"].rsplit("/", 1)[1]])
        if "example" in node:
            return node["example"]
        kind = node.get("type", "object")
        if kind == "object":
            return {name: build(sub) for name, sub in node.get("properties", {}).items()}
        if kind == "array":
            return [build(node.get("items", {}))]
        if "enum" in node:
            return node["enum"][0]
        return {"integer": 1, "number": 1.0, "boolean": False}.get(kind, "text")

    return build(schemas[component])


_counter = itertools.count()


def payout(payment_reference: Optional[str] = None, payout_date: str = "2024-02-01T06:00:00Z", **fields: Any) -> Dict[str, Any]:
    record = openapi_example("Payout")
    record.update(payment_reference=payment_reference or f"PREF{next(_counter):05d}", payout_date=payout_date)
    record.update(fields)
    return record


def transaction(payment_reference: str, **fields: Any) -> Dict[str, Any]:
    record = openapi_example("Transaction")
    record.update(payment_reference=payment_reference, order_id=str(uuid.uuid4()), capture_id=str(uuid.uuid4()))
    record.update(fields)
    return record


def summary(currency: str, start: str, end: str, **fields: Any) -> Dict[str, Any]:
    record = openapi_example("PayoutSummary")
    record.update(summary_settlement_currency=currency, summary_payout_date_start=start, summary_payout_date_end=end)
    record.update(fields)
    return record


ORDER_MANAGEMENT = "klarna-order-management-api.openapi.yml"


def capture(capture_id: Optional[str] = None, **fields: Any) -> Dict[str, Any]:
    record = openapi_example("Capture", filename=ORDER_MANAGEMENT)
    record.update(capture_id=capture_id or str(uuid.uuid4()))
    record.update(fields)
    return record


def refund(refund_id: Optional[str] = None, **fields: Any) -> Dict[str, Any]:
    record = openapi_example("Refund", filename=ORDER_MANAGEMENT)
    record.update(refund_id=refund_id or str(uuid.uuid4()))
    record.update(fields)
    return record


def order(
    order_id: Optional[str] = None,
    captures: Optional[List[Dict[str, Any]]] = None,
    refunds: Optional[List[Dict[str, Any]]] = None,
    **fields: Any,
) -> Dict[str, Any]:
    """A MerchantOrderDto from the OpenAPI examples, with one capture and one refund unless told."""
    record = openapi_example("MerchantOrderDto", filename=ORDER_MANAGEMENT)
    record.update(
        order_id=order_id or str(uuid.uuid4()),
        captures=[capture()] if captures is None else captures,
        refunds=[refund()] if refunds is None else refunds,
    )
    record.update(fields)
    return record


def no_such_order(order_id: str, correlation_id: str = "corr-404-order") -> Dict[str, Any]:
    return error("NO_SUCH_ORDER", [f"Order with id {order_id} was not found."], correlation_id)


def page(items_field: str, rows: List[Dict[str, Any]], offset: int = 0, size: int = 500, total: Optional[int] = None, with_total: bool = True) -> Dict[str, Any]:
    """One page of `rows` (the whole collection) as Klarna answers it at `offset`/`size`."""
    chunk = copy.deepcopy(rows[offset : offset + size])
    pagination: Dict[str, Any] = {"count": len(chunk), "offset": offset}
    if with_total:
        pagination["total"] = len(rows) if total is None else total
    return {items_field: chunk, "pagination": pagination}


def error(error_code: str = "BAD_VALUE", messages: Iterable[str] = ("Bad value",), correlation_id: str = "corr-0001") -> Dict[str, Any]:
    return {"error_code": error_code, "error_messages": list(messages), "correlation_id": correlation_id}


def transactions_naming(payment_reference: str, *order_ids: str) -> List[Dict[str, Any]]:
    """One transaction of the payout per order id given (repeat an id to name an order twice)."""
    return [transaction(payment_reference, order_id=order_id, amount=100 + i) for i, order_id in enumerate(order_ids)]
