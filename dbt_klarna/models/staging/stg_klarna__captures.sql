{#- The captures of the orders Klarna returns (stg_klarna__orders: an order it no longer returns takes its
    captures along, however they were loaded). Captures carry no currency: it is their order's. -#}
with latest as (
  {% call klarna_latest_rows('captures', ['capture_id']) %}
    cast(capture_id as {{ dbt.type_string() }}) as capture_id,
    cast(order_id as {{ dbt.type_string() }}) as order_id,
    cast(captured_at as {{ dbt.type_timestamp() }}) as captured_at,
    cast(payout_date as {{ dbt.type_timestamp() }}) as payout_date,
    cast(reference as {{ dbt.type_string() }}) as reference,
    cast(klarna_reference as {{ dbt.type_string() }}) as klarna_reference,
    cast(description as {{ dbt.type_string() }}) as description,
    coalesce(cast(captured_amount as {{ dbt.type_bigint() }}), 0) as captured_amount_minor,
    coalesce(cast(refunded_amount as {{ dbt.type_bigint() }}), 0) as refunded_amount_minor
  {% endcall %}
)

select
  latest.*,
  orders.currency_code,
  {{ klarna_to_major_units('latest.captured_amount_minor', 'orders.currency_code') }} as captured_amount,
  {{ klarna_to_major_units('latest.refunded_amount_minor', 'orders.currency_code') }} as refunded_amount
from latest
inner join {{ ref('stg_klarna__orders') }} as orders
  on orders.source_relation = latest.source_relation
  and orders.order_id = latest.order_id
