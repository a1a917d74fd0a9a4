{% set amounts = ['order_amount', 'original_order_amount', 'captured_amount', 'refunded_amount', 'remaining_authorized_amount'] %}

with latest as (
  {{ klarna_latest_rows(source('klarna', 'orders'), ['order_id']) }}
),

typed as (
  select
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
    {%- for a in amounts %}
    coalesce(cast({{ a }} as {{ dbt.type_bigint() }}), 0) as {{ a }}_minor,
    {%- endfor %}
    cast(_airbyte_raw_id as {{ dbt.type_string() }}) as _airbyte_raw_id,
    cast(_airbyte_extracted_at as {{ dbt.type_timestamp() }}) as _airbyte_extracted_at
  from latest
)

select
  typed.*,
  {%- for a in amounts %}
  {{ klarna_to_major_units(a ~ '_minor', 'currency_code') }} as {{ a }}{% if not loop.last %},{% endif %}
  {%- endfor %}
from typed
