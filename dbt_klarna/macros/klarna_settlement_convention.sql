{#- Klarna's settlement sign convention (Klarna Settlements API; source-klarna's README).

    Every transaction `amount` is a positive integer in minor units; its `type` gives the direction.
    A payout's `totals` hold, per totals field, the sum of the amounts of its types, and
        settlement_amount = sale + release + credit + fee_refund + fee_correction
                            - fee - return - reversal - commission - tax - holdback - charge
-#}

{% macro klarna_totals_by_type() -%}
  {{ return({
      'sale_amount': ['SALE'],
      'fee_amount': ['FEE'],
      'return_amount': ['RETURN'],
      'reversal_amount': ['REVERSAL', 'REVERSAL_MERCHANT_PROTECTION'],
      'commission_amount': ['COMMISSION'],
      'tax_amount': ['TAX'],
      'holdback_amount': ['HOLDBACK'],
      'release_amount': ['RELEASE'],
      'charge_amount': ['CHARGE'],
      'credit_amount': ['CREDIT'],
      'fee_refund_amount': ['FEE_REFUND'],
      'fee_correction_amount': ['CORRECTION'],
  }) }}
{%- endmacro %}

{# The totals fields, in a fixed order (a dict's order is not guaranteed on every Jinja). #}
{% macro klarna_type_total_fields() -%}
  {{ return(['sale_amount', 'fee_amount', 'return_amount', 'reversal_amount', 'commission_amount', 'tax_amount',
             'holdback_amount', 'release_amount', 'charge_amount', 'credit_amount', 'fee_refund_amount',
             'fee_correction_amount']) }}
{%- endmacro %}

{# Every field of the payout `totals` object (Klarna's Totals schema). #}
{% macro klarna_all_total_fields() -%}
  {{ return(klarna_type_total_fields() + ['tax_refund_amount', 'repay_amount', 'settlement_amount', 'deposit_amount',
             'opening_debt_balance_amount', 'closing_debt_balance_amount']) }}
{%- endmacro %}

{% macro klarna_towards_merchant_fields() -%}
  {{ return(['sale_amount', 'release_amount', 'credit_amount', 'fee_refund_amount', 'fee_correction_amount']) }}
{%- endmacro %}

{% macro klarna_towards_merchant_types() -%}
  {{ return(['SALE', 'RELEASE', 'CREDIT', 'FEE_REFUND', 'CORRECTION']) }}
{%- endmacro %}

{% macro klarna_towards_klarna_types() -%}
  {{ return(['FEE', 'RETURN', 'REVERSAL', 'REVERSAL_MERCHANT_PROTECTION', 'COMMISSION', 'TAX', 'HOLDBACK', 'CHARGE']) }}
{%- endmacro %}

{# What Klarna charges the merchant (klarna__fees): charged (+) and given back (-). #}
{% macro klarna_fee_types_charged() -%}
  {{ return(['FEE', 'COMMISSION', 'TAX', 'CHARGE']) }}
{%- endmacro %}

{% macro klarna_fee_types_refunded() -%}
  {{ return(['FEE_REFUND', 'CORRECTION']) }}
{%- endmacro %}

{% macro klarna_in_list(values) -%}
  ({% for v in values %}'{{ v }}'{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro %}

{# A transaction's amount signed towards the merchant: + money to the merchant, - money to Klarna. #}
{% macro klarna_signed_amount(type_column, amount_column) -%}
  case
    when {{ type_column }} in {{ klarna_in_list(klarna_towards_merchant_types()) }} then {{ amount_column }}
    when {{ type_column }} in {{ klarna_in_list(klarna_towards_klarna_types()) }} then -{{ amount_column }}
    else 0
  end
{%- endmacro %}

{# The payout totals field a transaction type is summed into (null for a type outside the convention). #}
{% macro klarna_totals_field_of_type(type_column) -%}
  case
  {%- for field, types in klarna_totals_by_type().items() %}
    when {{ type_column }} in {{ klarna_in_list(types) }} then '{{ field }}'
  {%- endfor %}
    else null
  end
{%- endmacro %}
