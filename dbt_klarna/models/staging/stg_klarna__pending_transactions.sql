{{ config(enabled=var('klarna__using_pending_transactions', true)) }}

with latest as (
  {{ klarna_latest_rows(source('klarna', 'pending_transactions'), ['transaction_key']) }}
),

typed as (
  select
    {{ klarna_transaction_columns(in_payout=false) }}
  from latest
)

select
  typed.*,
  {{ klarna_transaction_major_units() }}
from typed
