{#- Captures carry no currency: it is their order's (purchase_currency). -#}
with latest as (
  {{ klarna_latest_rows(source('klarna', 'captures'), ['capture_id']) }}
),

typed as (
  select
    cast(capture_id as {{ dbt.type_string() }}) as capture_id,
    cast(order_id as {{ dbt.type_string() }}) as order_id,
    cast(captured_at as {{ dbt.type_timestamp() }}) as captured_at,
    cast(payout_date as {{ dbt.type_timestamp() }}) as payout_date,
    cast(reference as {{ dbt.type_string() }}) as reference,
    cast(klarna_reference as {{ dbt.type_string() }}) as klarna_reference,
    cast(description as {{ dbt.type_string() }}) as description,
    coalesce(cast(captured_amount as {{ dbt.type_bigint() }}), 0) as captured_amount_minor,
    coalesce(cast(refunded_amount as {{ dbt.type_bigint() }}), 0) as refunded_amount_minor,
    cast(_airbyte_raw_id as {{ dbt.type_string() }}) as _airbyte_raw_id,
    cast(_airbyte_extracted_at as {{ dbt.type_timestamp() }}) as _airbyte_extracted_at
  from latest
)

select
  typed.*,
  orders.currency_code,
  {{ klarna_to_major_units('typed.captured_amount_minor', 'orders.currency_code') }} as captured_amount,
  {{ klarna_to_major_units('typed.refunded_amount_minor', 'orders.currency_code') }} as refunded_amount
from typed
left join {{ ref('stg_klarna__orders') }} as orders
  on orders.order_id = typed.order_id
