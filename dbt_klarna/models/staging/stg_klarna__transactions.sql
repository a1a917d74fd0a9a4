with latest as (
  {{ klarna_latest_rows(source('klarna', 'transactions'), ['transaction_key']) }}
),

typed as (
  select
    {{ klarna_transaction_columns(in_payout=true) }}
  from latest
)

select
  typed.*,
  {{ klarna_transaction_major_units() }}
from typed
