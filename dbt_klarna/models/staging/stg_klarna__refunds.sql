{#- Refunds carry no currency: it is their order's (purchase_currency). -#}
with latest as (
  {{ klarna_latest_rows(source('klarna', 'refunds'), ['refund_id']) }}
),

typed as (
  select
    cast(refund_id as {{ dbt.type_string() }}) as refund_id,
    cast(order_id as {{ dbt.type_string() }}) as order_id,
    cast(refunded_at as {{ dbt.type_timestamp() }}) as refunded_at,
    cast(payout_date as {{ dbt.type_timestamp() }}) as payout_date,
    cast(reference as {{ dbt.type_string() }}) as reference,
    cast(description as {{ dbt.type_string() }}) as description,
    cast(credit_invoice as {{ dbt.type_boolean() }}) as is_credit_invoice,
    coalesce(cast(refunded_amount as {{ dbt.type_bigint() }}), 0) as refunded_amount_minor,
    cast(_airbyte_raw_id as {{ dbt.type_string() }}) as _airbyte_raw_id,
    cast(_airbyte_extracted_at as {{ dbt.type_timestamp() }}) as _airbyte_extracted_at
  from latest
)

select
  typed.*,
  orders.currency_code,
  {{ klarna_to_major_units('typed.refunded_amount_minor', 'orders.currency_code') }} as refunded_amount
from typed
left join {{ ref('stg_klarna__orders') }} as orders
  on orders.order_id = typed.order_id
