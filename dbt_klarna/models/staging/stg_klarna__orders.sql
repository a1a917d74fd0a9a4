{#- One row per order Klarna returns: the latest version of each, unless that is the connector's deletion
    record for an order Klarna no longer returns (`_ab_cdc_deleted_at` set; a deduplicated Airbyte
    destination drops the row itself). -#}
{% set amounts = ['order_amount', 'original_order_amount', 'captured_amount', 'refunded_amount', 'remaining_authorized_amount'] %}

with latest as (
  {% call klarna_latest_rows('orders', ['order_id']) %}
    cast(order_id as {{ dbt.type_string() }}) as order_id,
    cast(status as {{ dbt.type_string() }}) as status,
    cast(fraud_status as {{ dbt.type_string() }}) as fraud_status,
    upper(cast(purchase_currency as {{ dbt.type_string() }})) as currency_code,
    cast(purchase_country as {{ dbt.type_string() }}) as purchase_country,
    cast(locale as {{ dbt.type_string() }}) as locale,
    cast(klarna_reference as {{ dbt.type_string() }}) as klarna_reference,
    cast(merchant_reference1 as {{ dbt.type_string() }}) as merchant_reference1,
    cast(merchant_reference2 as {{ dbt.type_string() }}) as merchant_reference2,
    cast(created_at as {{ dbt.type_timestamp() }}) as created_at,
    cast(expires_at as {{ dbt.type_timestamp() }}) as expires_at,
    cast(payout_date as {{ dbt.type_timestamp() }}) as payout_date,
    cast(_ab_cdc_deleted_at as {{ dbt.type_timestamp() }}) as deleted_at,
    {%- for a in amounts %}
    coalesce(cast({{ a }} as {{ dbt.type_bigint() }}), 0) as {{ a }}_minor{% if not loop.last %},{% endif %}
    {%- endfor %}
  {% endcall %}
)

select
  source_relation, order_id, status, fraud_status, currency_code, purchase_country, locale, klarna_reference,
  merchant_reference1, merchant_reference2, created_at, expires_at, payout_date,
  {%- for a in amounts %}
  {{ a }}_minor,
  {{ klarna_to_major_units(a ~ '_minor', 'currency_code') }} as {{ a }},
  {%- endfor %}
  _airbyte_raw_id,
  _airbyte_extracted_at
from latest
where deleted_at is null
