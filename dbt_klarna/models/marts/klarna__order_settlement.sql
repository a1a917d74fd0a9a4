{#- Where each order's money is, per store (source_relation): one row per order that Klarna returns or that a
    settlement transaction names (paid out or pending). Captured and refunded (Order Management API),
    settled in which payouts (the order's transactions in payouts), waiting in pending transactions (not in
    a payout yet), and outstanding: captured minus refunded that no settlement transaction (paid out or
    pending) accounts for yet. An order without details (Klarna no longer returns it, or only pending
    transactions name it so far: the connector reads orders named by paid-out transactions) keeps its
    settlement money, with has_order_details false, null captured/refunded/outstanding and the status
    no_order_details. `_minor` in minor units, the others in major units. -#}
{% set using_pending = var('klarna__using_pending_transactions', true) %}

with orders as (
  select * from {{ ref('stg_klarna__orders') }}
),

captures as (
  select source_relation, order_id, count(*) as capture_count, cast(sum(captured_amount_minor) as {{ dbt.type_bigint() }}) as captures_amount_minor
  from {{ ref('stg_klarna__captures') }}
  group by source_relation, order_id
),

refunds as (
  select source_relation, order_id, count(*) as refund_count, cast(sum(refunded_amount_minor) as {{ dbt.type_bigint() }}) as refunds_amount_minor
  from {{ ref('stg_klarna__refunds') }}
  group by source_relation, order_id
),

settled_transactions as (
  select source_relation, order_id, payment_reference, payout_date, transaction_type, currency_code, amount_minor, signed_amount_minor
  from {{ ref('stg_klarna__transactions') }}
  where order_id is not null
),

settled as (
  select
    source_relation,
    order_id,
    count(distinct payment_reference) as payout_count,
    min(payout_date) as first_payout_date,
    max(payout_date) as last_payout_date,
    min(currency_code) as currency_code,
    cast(sum(case when transaction_type = 'SALE' then amount_minor else 0 end) as {{ dbt.type_bigint() }}) as paid_out_sale_amount_minor,
    cast(sum(case when transaction_type = 'RETURN' then amount_minor else 0 end) as {{ dbt.type_bigint() }}) as paid_out_return_amount_minor,
    cast(sum(case when transaction_type in {{ klarna_in_list(klarna_fee_types_charged()) }} then amount_minor
             when transaction_type in {{ klarna_in_list(klarna_fee_types_refunded()) }} then -amount_minor
             else 0 end) as {{ dbt.type_bigint() }}) as paid_out_fee_amount_minor,
    cast(sum(signed_amount_minor) as {{ dbt.type_bigint() }}) as paid_out_net_amount_minor
  from settled_transactions
  group by source_relation, order_id
),

order_payouts as (
  select distinct source_relation, order_id, payment_reference
  from settled_transactions
),

payout_lists as (
  select
    source_relation,
    order_id,
    {{ dbt.listagg('payment_reference', "', '", 'order by payment_reference') }} as payment_references
  from order_payouts
  group by source_relation, order_id
),

pending as (
  {%- if using_pending %}
  select
    source_relation,
    order_id,
    min(currency_code) as currency_code,
    count(*) as pending_transaction_count,
    cast(sum(case when transaction_type = 'SALE' then amount_minor else 0 end) as {{ dbt.type_bigint() }}) as pending_sale_amount_minor,
    cast(sum(case when transaction_type = 'RETURN' then amount_minor else 0 end) as {{ dbt.type_bigint() }}) as pending_return_amount_minor,
    cast(sum(signed_amount_minor) as {{ dbt.type_bigint() }}) as pending_net_amount_minor
  from {{ ref('stg_klarna__pending_transactions') }}
  where order_id is not null
  group by source_relation, order_id
  {%- else %}
  {#- pending_transactions not synced: no row, same columns. #}
  select
    cast(null as {{ dbt.type_string() }}) as source_relation,
    cast(null as {{ dbt.type_string() }}) as order_id,
    cast(null as {{ dbt.type_string() }}) as currency_code,
    cast(0 as {{ dbt.type_bigint() }}) as pending_transaction_count,
    cast(0 as {{ dbt.type_bigint() }}) as pending_sale_amount_minor,
    cast(0 as {{ dbt.type_bigint() }}) as pending_return_amount_minor,
    cast(0 as {{ dbt.type_bigint() }}) as pending_net_amount_minor
  from orders
  where 1 = 0
  {%- endif %}
),

order_keys as (
  select source_relation, order_id from orders
  union
  select source_relation, order_id from settled
  union
  select source_relation, order_id from pending
),

joined as (
  select
    order_keys.source_relation,
    order_keys.order_id,
    orders.order_id is not null as has_order_details,
    orders.status,
    coalesce(orders.currency_code, settled.currency_code, pending.currency_code) as currency_code,
    orders.purchase_country,
    orders.merchant_reference1,
    orders.created_at,
    orders.order_amount_minor,
    orders.captured_amount_minor,
    orders.refunded_amount_minor,
    orders.remaining_authorized_amount_minor,
    coalesce(captures.capture_count, 0) as capture_count,
    coalesce(refunds.refund_count, 0) as refund_count,
    coalesce(settled.payout_count, 0) as payout_count,
    payout_lists.payment_references,
    settled.first_payout_date,
    settled.last_payout_date,
    coalesce(settled.paid_out_sale_amount_minor, 0) as paid_out_sale_amount_minor,
    coalesce(settled.paid_out_return_amount_minor, 0) as paid_out_return_amount_minor,
    coalesce(settled.paid_out_fee_amount_minor, 0) as paid_out_fee_amount_minor,
    coalesce(settled.paid_out_net_amount_minor, 0) as paid_out_net_amount_minor,
    coalesce(pending.pending_transaction_count, 0) as pending_transaction_count,
    coalesce(pending.pending_sale_amount_minor, 0) as pending_sale_amount_minor,
    coalesce(pending.pending_return_amount_minor, 0) as pending_return_amount_minor,
    coalesce(pending.pending_net_amount_minor, 0) as pending_net_amount_minor
  from order_keys
  left join orders on orders.source_relation = order_keys.source_relation and orders.order_id = order_keys.order_id
  left join captures on captures.source_relation = order_keys.source_relation and captures.order_id = order_keys.order_id
  left join refunds on refunds.source_relation = order_keys.source_relation and refunds.order_id = order_keys.order_id
  left join settled on settled.source_relation = order_keys.source_relation and settled.order_id = order_keys.order_id
  left join payout_lists on payout_lists.source_relation = order_keys.source_relation and payout_lists.order_id = order_keys.order_id
  left join pending on pending.source_relation = order_keys.source_relation and pending.order_id = order_keys.order_id
),

balanced as (
  select
    joined.*,
    captured_amount_minor - refunded_amount_minor as net_captured_amount_minor,
    (captured_amount_minor - refunded_amount_minor)
      - (paid_out_sale_amount_minor - paid_out_return_amount_minor)
      - (pending_sale_amount_minor - pending_return_amount_minor) as outstanding_amount_minor
  from joined
)

select
  balanced.*,
  case
    when not has_order_details then 'no_order_details'
    when captured_amount_minor = 0 then 'not_captured'
    when outstanding_amount_minor > 0 then 'awaiting_settlement'
    when outstanding_amount_minor < 0 then 'over_settled'
    when pending_transaction_count > 0 then 'pending_payout'
    else 'paid_out'
  end as settlement_status,
  {%- for a in ['order_amount', 'captured_amount', 'refunded_amount', 'net_captured_amount', 'paid_out_sale_amount',
                'paid_out_return_amount', 'paid_out_fee_amount', 'paid_out_net_amount', 'pending_sale_amount',
                'pending_return_amount', 'pending_net_amount', 'outstanding_amount'] %}
  {{ klarna_to_major_units(a ~ '_minor', 'currency_code') }} as {{ a }}{% if not loop.last %},{% endif %}
  {%- endfor %}
from balanced
