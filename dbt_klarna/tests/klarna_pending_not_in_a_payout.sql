{#- Fails with one row per pending transaction whose money movement is now in a payout: a transaction of
    stg_klarna__transactions with the same movement_key extracted at or after the pending row's listing (the
    n-th pending row of a movement needs n of them). stg_klarna__pending_transactions drops such rows; a row
    here means a pending amount counted twice in klarna__order_settlement. -#}
{{ config(enabled=var('klarna__using_pending_transactions', true)) }}

with pending as (
  select
    source_relation,
    transaction_key,
    movement_key,
    pending_as_of,
    movement_occurrence  -- the model's, numbered over its listing before paid-out rows were dropped
  from {{ ref('stg_klarna__pending_transactions') }}
),

paid as (
  select
    pending.source_relation,
    pending.transaction_key,
    count(transactions.transaction_key) as paid_count
  from pending
  inner join {{ ref('stg_klarna__transactions') }} as transactions
    on transactions.source_relation = pending.source_relation
    and transactions.movement_key = pending.movement_key
    and transactions._airbyte_extracted_at >= pending.pending_as_of
  group by pending.source_relation, pending.transaction_key
)

select pending.source_relation, pending.transaction_key, pending.movement_key, paid.paid_count
from pending
inner join paid
  on paid.source_relation = pending.source_relation
  and paid.transaction_key = pending.transaction_key
where paid.paid_count >= pending.movement_occurrence
