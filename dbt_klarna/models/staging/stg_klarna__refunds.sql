{#- The refunds of the orders Klarna returns (see stg_klarna__captures). Refunds carry no currency: it is
    their order's (purchase_currency). -#}
with latest as (
  {% call klarna_latest_rows('refunds', ['refund_id']) %}
    cast(refund_id as {{ dbt.type_string() }}) as refund_id,
    cast(order_id as {{ dbt.type_string() }}) as order_id,
    cast(refunded_at as {{ dbt.type_timestamp() }}) as refunded_at,
    cast(payout_date as {{ dbt.type_timestamp() }}) as payout_date,
    cast(reference as {{ dbt.type_string() }}) as reference,
    cast(description as {{ dbt.type_string() }}) as description,
    cast(credit_invoice as {{ dbt.type_boolean() }}) as is_credit_invoice,
    coalesce(cast(refunded_amount as {{ dbt.type_bigint() }}), 0) as refunded_amount_minor
  {% endcall %}
)

select
  latest.*,
  orders.currency_code,
  {{ klarna_to_major_units('latest.refunded_amount_minor', 'orders.currency_code') }} as refunded_amount
from latest
inner join {{ ref('stg_klarna__orders') }} as orders
  on orders.source_relation = latest.source_relation
  and orders.order_id = latest.order_id
