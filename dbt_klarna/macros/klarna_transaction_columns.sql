{#- The columns of a settlement transaction (the `transactions` stream, and `pending_transactions`,
    the transactions not yet in a payout), the typed select list of klarna_latest_rows. Amounts:
    `<name>_minor` integers and `<name>` in major units. -#}

{% macro klarna_transaction_columns(in_payout=true) -%}
    cast(transaction_key as {{ dbt.type_string() }}) as transaction_key,
    {%- if in_payout %}
    cast(payment_reference as {{ dbt.type_string() }}) as payment_reference,
    cast(payout_date as {{ dbt.type_timestamp() }}) as payout_date,
    {%- endif %}
    cast(type as {{ dbt.type_string() }}) as transaction_type,
    cast(detailed_type as {{ dbt.type_string() }}) as detailed_type,
    upper(cast(currency_code as {{ dbt.type_string() }})) as currency_code,
    cast(amount as {{ dbt.type_bigint() }}) as amount_minor,
    {{ klarna_signed_amount('type', 'cast(amount as ' ~ dbt.type_bigint() ~ ')') }} as signed_amount_minor,
    {{ klarna_totals_field_of_type('type') }} as totals_field,
    cast(vat_amount as {{ dbt.type_bigint() }}) as vat_amount_minor,
    cast(vat_rate as {{ dbt.type_bigint() }}) as vat_rate,
    cast(tax_in_currency_of_registration_country as {{ dbt.type_bigint() }}) as tax_in_currency_of_registration_country_minor,
    upper(cast(currency_code_of_registration_country as {{ dbt.type_string() }})) as currency_code_of_registration_country,
    cast(sale_date as {{ dbt.type_timestamp() }}) as sale_date,
    cast(capture_date as {{ dbt.type_timestamp() }}) as capture_date,
    cast(order_id as {{ dbt.type_string() }}) as order_id,
    cast(short_order_id as {{ dbt.type_string() }}) as short_order_id,
    cast(capture_id as {{ dbt.type_string() }}) as capture_id,
    cast(refund_id as {{ dbt.type_string() }}) as refund_id,
    cast(merchant_reference1 as {{ dbt.type_string() }}) as merchant_reference1,
    cast(merchant_reference2 as {{ dbt.type_string() }}) as merchant_reference2,
    cast(merchant_capture_reference as {{ dbt.type_string() }}) as merchant_capture_reference,
    cast(merchant_refund_reference as {{ dbt.type_string() }}) as merchant_refund_reference,
    cast(reversal_reference as {{ dbt.type_string() }}) as reversal_reference,
    cast(purchase_country as {{ dbt.type_string() }}) as purchase_country,
    cast(shipping_country as {{ dbt.type_string() }}) as shipping_country,
    cast(initial_payment_method_type as {{ dbt.type_string() }}) as initial_payment_method_type,
    cast(initial_number_of_installments as {{ dbt.type_bigint() }}) as initial_number_of_installments,
    cast(klarna_comment as {{ dbt.type_string() }}) as klarna_comment,
    {{ klarna_movement_key() }} as movement_key
{%- endmacro %}

{#- The money movement a transaction row stands for, whether pending or paid out: a hash of Klarna's fields
    without payment_reference and payout, which a row gains when Klarna pays it out (every other field stays).
    A pending row and its later paid-out self share it; klarna_pending_transactions uses it to drop a pending
    row once its transaction is in a payout. -#}
{% macro klarna_movement_key() -%}
  {%- set fields = ['order_id', 'type', 'detailed_type', 'amount', 'currency_code', 'capture_id', 'refund_id', 'sale_date',
                    'capture_date', 'short_order_id', 'merchant_reference1', 'merchant_reference2', 'merchant_capture_reference',
                    'merchant_refund_reference', 'reversal_reference', 'vat_amount', 'vat_rate'] -%}
  {%- set parts = [] -%}
  {%- for field in fields -%}
    {%- do parts.append("coalesce(cast(" ~ field ~ " as " ~ dbt.type_string() ~ "), '~')") -%}
    {%- if not loop.last %}{% do parts.append("'|'") %}{% endif -%}
  {%- endfor -%}
  {{ dbt.hash(dbt.concat(parts)) }}
{%- endmacro %}

{% macro klarna_transaction_major_units() -%}
    {{ klarna_to_major_units('amount_minor', 'currency_code') }} as amount,
    {{ klarna_to_major_units('signed_amount_minor', 'currency_code') }} as signed_amount,
    {{ klarna_to_major_units('vat_amount_minor', 'currency_code') }} as vat_amount
{%- endmacro %}

{#- A DisputeKRN as both sides can match it: Klarna's examples write the reason part of the same KRN with
    '-' (Disputes API) and '_' (settlements' reversal_reference). -#}
{% macro klarna_dispute_match_key(column) -%}
  replace(lower(cast({{ column }} as {{ dbt.type_string() }})), '-', '_')
{%- endmacro %}
