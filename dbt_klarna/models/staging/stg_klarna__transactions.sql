with latest as (
  {% call klarna_latest_rows('transactions', ['transaction_key']) %}
    {{ klarna_transaction_columns(in_payout=true) }}
  {% endcall %}
)

select
  latest.*,
  {{ klarna_transaction_major_units() }}
from latest
