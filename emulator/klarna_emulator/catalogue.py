"""The constant tables the generated data draws from: merchant facts, countries, payment methods,
people, products, carriers and the kinds of non-sale transactions.

Every table is indexed by position from a seeded random draw, so the ORDER and LENGTH of each tuple
are part of the data: changing them changes the bytes served for every spec (see emulator/golden.py).
Entries that repeat (``PAYMENT_METHODS``, the ``EUR`` countries) are weights, not mistakes.
"""
from __future__ import annotations

import bisect
from typing import NamedTuple

__all__ = [
    "SETTLEMENTS_LINK_BASE", "REGISTRATION_CURRENCY", "MERCHANT_SETTLEMENT_TYPE", "FEE_VAT_RATE",
    "COUNTRIES_BY_CURRENCY", "EU_NEIGHBOURS", "LOCALES", "GOODS_VAT_RATE", "TO_EUR", "PaymentMethod",
    "PAYMENT_METHODS", "GIVEN_NAMES", "FAMILY_NAMES", "STREETS", "CITIES", "DIAL_CODES", "US_REGIONS",
    "Product", "PRODUCTS", "Carrier", "CARRIERS", "DISPUTE_CATEGORIES", "MiscKind", "MISC_KINDS",
    "MISC_TOTAL_WEIGHT", "misc_kind_at", "KLARNA_COMMENTS", "CODE_ALPHABET",
]

#: Base of the ``payout`` / ``transactions`` links inside the data. It is fixed
#: (like the real API, which always links to its own host) so the data does not
#: depend on the emulator's random port. Pagination ``next``/``prev`` links do
#: point at the emulator.
SETTLEMENTS_LINK_BASE = "https://api.klarna.com/settlements/v1"
REGISTRATION_CURRENCY = "EUR"
MERCHANT_SETTLEMENT_TYPE = "NET"
FEE_VAT_RATE = 1900  # German merchant: 19.00 % VAT on Klarna fees

#: purchase countries per currency (repeats weigh the draw); a currency not listed buys in the US
COUNTRIES_BY_CURRENCY = {
    "EUR": ("DE", "DE", "DE", "NL", "AT", "FI", "FR"),
    "SEK": ("SE",), "USD": ("US",), "GBP": ("GB",), "NOK": ("NO",), "DKK": ("DK",),
    "CHF": ("CH",), "AUD": ("AU",), "PLN": ("PL",), "CAD": ("CA",), "NZD": ("NZ",),
}
#: where a EUR order ships when it does not ship to its purchase country
EU_NEIGHBOURS = ("DE", "NL", "AT", "BE", "FR", "DK", "PL")
LOCALES = {"DE": "de-DE", "NL": "nl-NL", "AT": "de-AT", "FI": "fi-FI", "FR": "fr-FR", "SE": "sv-SE",
           "US": "en-US", "GB": "en-GB", "NO": "nb-NO", "DK": "da-DK", "CH": "de-CH", "AU": "en-AU",
           "PL": "pl-PL", "CA": "en-CA", "NZ": "en-NZ", "BE": "nl-BE"}
#: VAT on goods per purchase country, in hundredths of a percent (Klarna's tax_rate unit)
GOODS_VAT_RATE = {"DE": 1900, "NL": 2100, "AT": 2000, "FI": 2400, "FR": 2000, "SE": 2500, "US": 0, "GB": 2000,
                  "NO": 2500, "DK": 2500, "CH": 810, "AU": 1000, "PL": 2300, "CA": 500, "NZ": 1500, "BE": 2100}
#: rough exchange rates to the registration currency, for tax_in_currency_of_registration_country
TO_EUR = {"EUR": 1.0, "SEK": 0.087, "USD": 0.92, "GBP": 1.17, "NOK": 0.086, "DKK": 0.134, "CHF": 1.04,
          "AUD": 0.61, "PLN": 0.23, "CAD": 0.68, "NZD": 0.56}


class PaymentMethod(NamedTuple):
    transaction_value: str  #: the transaction's initial_payment_method_type
    order_type: str  #: the order's initial_payment_method.type
    description: str
    installment_choices: tuple  #: number_of_installments drawn from these (none: no installments)


PAYMENT_METHODS = (
    PaymentMethod("invoice", "INVOICE", "Pay later in 30 days", ()),
    PaymentMethod("invoice", "INVOICE", "Pay later in 30 days", ()),
    PaymentMethod("invoice", "INVOICE", "Pay later in 30 days", ()),
    PaymentMethod("fixed_amount", "FIXED_AMOUNT", "Slice it (Fixed Payments)", (6, 12, 24)),
    PaymentMethod("pay_later_in_parts", "PAY_LATER_IN_PARTS", "Pay in 3 interest-free instalments", (3,)),
    PaymentMethod("pay_later_in_parts", "PAY_LATER_IN_PARTS", "Pay in 3 interest-free instalments", (3,)),
    PaymentMethod("direct_debit", "DIRECT_DEBIT", "Direct debit", ()),
    PaymentMethod("card", "CARD", "Pay now with card", ()),
    PaymentMethod("card", "CARD", "Pay now with card", ()),
    PaymentMethod("pay_in_x", "PAY_IN_X", "Pay in 4", (4,)),
)
GIVEN_NAMES = ("Anna", "Erik", "Maria", "Lars", "Sofia", "Jonas", "Emma", "Lukas", "Klara", "Noah", "Olivia",
               "Liam", "Hanna", "Felix", "Julia", "Oskar", "Mia", "Leon", "Ella", "Paul")
FAMILY_NAMES = ("Andersson", "Schmidt", "Johansson", "Mueller", "de Vries", "Virtanen", "Martin", "Smith",
                "Joyce", "Nilsson", "Weber", "Jansen", "Korhonen", "Bernard", "Johnson", "Larsen", "Berg")
STREETS = ("Main Street", "Hauptstrasse", "Storgatan", "Kerkstraat", "Mannerheimintie", "Rue de Rivoli",
           "Sveavagen", "Bahnhofstrasse", "Oak Avenue", "Drottninggatan", "Lindenallee")
#: cities per country; a country not listed has ("Springfield",)
CITIES = {"DE": ("Berlin", "Hamburg", "Munich", "Cologne"), "NL": ("Amsterdam", "Utrecht", "Rotterdam"),
          "AT": ("Vienna", "Graz"), "FI": ("Helsinki", "Espoo"), "FR": ("Paris", "Lyon"),
          "SE": ("Stockholm", "Gothenburg", "Malmo", "Uppsala"), "US": ("Knoxville", "Columbus", "Austin"),
          "GB": ("London", "Leeds"), "NO": ("Oslo", "Bergen"), "DK": ("Copenhagen", "Aarhus"),
          "BE": ("Brussels", "Ghent"), "PL": ("Warsaw", "Krakow")}
DIAL_CODES = {"DE": "49", "NL": "31", "AT": "43", "FI": "358", "FR": "33", "SE": "46", "US": "1", "GB": "44",
              "NO": "47", "DK": "45", "CH": "41", "AU": "61", "PL": "48", "CA": "1", "NZ": "64", "BE": "32"}
US_REGIONS = ("TN", "OH", "TX", "CA", "NY", "WA")


class Product(NamedTuple):
    name: str
    slug: str  #: used in the SKU, the product URL and the image URL


PRODUCTS = (Product("Wireless Headphones", "headphones"), Product("Running Shoes", "shoes"),
            Product("Denim Jacket", "jacket"), Product("Coffee Grinder", "grinder"), Product("Desk Lamp", "lamp"),
            Product("Yoga Mat", "yoga-mat"), Product("Backpack", "backpack"), Product("Sunglasses", "sunglasses"),
            Product("Water Bottle", "bottle"), Product("Smart Watch", "watch"), Product("Wool Sweater", "sweater"),
            Product("Board Game", "board-game"))


class Carrier(NamedTuple):
    shipping_company: str
    shipping_method: str


CARRIERS = (Carrier("DHL Paket", "Home"), Carrier("PostNord", "PickUpPoint"), Carrier("UPS Standard", "Home"),
            Carrier("DPD Classic", "Home"), Carrier("Bring", "PickUpPoint"), Carrier("USPS Priority", "Postal"))
DISPUTE_CATEGORIES = ("goods_not_received", "faulty_goods", "return", "unauthorized_purchase",
                      "incorrect_invoice")


class MiscKind(NamedTuple):
    """A kind of non-sale transaction: its type, its weight in the draw, its possible detailed types."""

    type: str
    weight: int
    detailed_types: tuple


MISC_KINDS = (
    MiscKind("RETURN", 30, ("PURCHASE_RETURN",)),
    MiscKind("FEE_REFUND", 7, ("PURCHASE_FEE_PERCENTAGE_REFUND", "FEE_REFUND", "DISPUTE_FEE_REFUND")),
    MiscKind("REVERSAL", 6, ("REVERSAL",)),
    MiscKind("REVERSAL_MERCHANT_PROTECTION", 2, ("REVERSAL",)),
    MiscKind("COMMISSION", 7, ("PURCHASE_COMMISSION_PERCENTAGE", "COMMISSION")),
    MiscKind("TAX", 5, (None,)),
    MiscKind("HOLDBACK", 7, ("ROLLING_RESERVE",)),
    MiscKind("RELEASE", 7, ("ROLLING_RESERVE",)),
    MiscKind("CHARGE", 6, ("FRAUD_POLICY_CHARGE", "DISPUTE_FEE", "EXTRA_INVOICE_FEE")),
    MiscKind("CREDIT", 6, ("FRAUD_POLICY_CREDIT_NET", "CREDITED_CORRECTION", "MANUAL_ENTRY")),
    MiscKind("CORRECTION", 7, ("FIXED_FEE_CORRECTION", "PERCENTAGE_FEE_CORRECTION", "CORRECTION")),
    MiscKind("FEE", 6, ("RETURN_FEE", "LATE_RETURN_FEE", "SERVICING_FEE", "EXTEND_DUE_DATE_FEE")),
)
_MISC_CUMULATIVE = tuple(sum(kind.weight for kind in MISC_KINDS[:i + 1]) for i in range(len(MISC_KINDS)))
MISC_TOTAL_WEIGHT = _MISC_CUMULATIVE[-1]


def misc_kind_at(x: float) -> MiscKind:
    """The kind whose weight interval holds ``x`` (``0 <= x < MISC_TOTAL_WEIGHT``)."""
    return MISC_KINDS[bisect.bisect_right(_MISC_CUMULATIVE, x)]


#: klarna_comment prefixes per transaction type (types not listed have no comment)
KLARNA_COMMENTS = {
    "HOLDBACK": "Rolling reserve 10% for order",
    "RELEASE": "Rolling reserve released",
    "CHARGE": "Charge",
    "CREDIT": "Credit",
    "CORRECTION": "Fee correction",
}
#: alphabet of short order ids and merchant references (no 0/O, 1/I)
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
