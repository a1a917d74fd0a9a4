{#- Fails with one row per payout whose totals do not match its transactions: the payout's
    payment_reference, the fields that differ and the settlement difference. dbt stores the rows
    (store_failures) in the test audit schema; `dbt build` prints the query that shows them. -#}
{{ config(severity=var('klarna__reconciliation_severity', 'error')) }}

select
  source_relation,
  payment_reference,
  payout_date,
  currency_code,
  mismatched_fields,
  totals_settlement_amount_minor,
  transactions_settlement_amount_minor,
  settlement_difference_minor
from {{ ref('klarna__payout_reconciliation') }}
where not is_reconciled
