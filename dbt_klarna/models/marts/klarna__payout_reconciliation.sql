{#- One row per payout (per store: source_relation): its totals (as Klarna reports them) against the sums of its transactions by
    type, the difference, and the amount to match against the bank statement. Amounts `_minor` are
    integers in minor units (exact comparison); the others are in major units of currency_code. -#}
{% set type_fields = klarna_type_total_fields() %}
{% set by_type = klarna_totals_by_type() %}

with payouts as (
  select * from {{ ref('stg_klarna__payouts') }}
),

sums as (
  select
    source_relation,
    payment_reference,
    count(*) as transaction_count,
    {%- for field in type_fields %}
    cast(sum(case when transaction_type in {{ klarna_in_list(by_type[field]) }} then amount_minor else 0 end) as {{ dbt.type_bigint() }}) as transactions_{{ field }}_minor,
    {%- endfor %}
    cast(sum(signed_amount_minor) as {{ dbt.type_bigint() }}) as transactions_settlement_amount_minor,
    cast(sum(case when totals_field is null then 1 else 0 end) as {{ dbt.type_bigint() }}) as unknown_type_count
  from {{ ref('stg_klarna__transactions') }}
  group by source_relation, payment_reference
),

compared as (
  select
    payouts.source_relation,
    payouts.payment_reference,
    payouts.payout_date,
    payouts.currency_code,
    payouts.merchant_id,
    payouts.merchant_settlement_type,
    coalesce(sums.transaction_count, 0) as transaction_count,
    coalesce(sums.unknown_type_count, 0) as unknown_type_count,
    {%- for field in type_fields %}
    payouts.{{ field }}_minor as totals_{{ field }}_minor,
    coalesce(sums.transactions_{{ field }}_minor, 0) as transactions_{{ field }}_minor,
    {%- endfor %}
    payouts.settlement_amount_minor as totals_settlement_amount_minor,
    coalesce(sums.transactions_settlement_amount_minor, 0) as transactions_settlement_amount_minor,
    payouts.deposit_amount_minor as totals_deposit_amount_minor,
    payouts.opening_debt_balance_amount_minor as totals_opening_debt_balance_amount_minor,
    payouts.closing_debt_balance_amount_minor as totals_closing_debt_balance_amount_minor
  from payouts
  left join sums
    on sums.source_relation = payouts.source_relation
    and sums.payment_reference = payouts.payment_reference
),

checked as (
  select
    compared.*,
    totals_settlement_amount_minor - transactions_settlement_amount_minor as settlement_difference_minor,
    (
      {%- for field in type_fields %}
      case when totals_{{ field }}_minor <> transactions_{{ field }}_minor then 1 else 0 end +
      {%- endfor %}
      case when totals_settlement_amount_minor <> transactions_settlement_amount_minor then 1 else 0 end
    ) as mismatched_field_count,
    {%- set pieces = [] %}
    {%- for field in type_fields %}
    {%- do pieces.append("case when totals_" ~ field ~ "_minor <> transactions_" ~ field ~ "_minor then '" ~ field ~ " ' else '' end") %}
    {%- endfor %}
    {%- do pieces.append("case when totals_settlement_amount_minor <> transactions_settlement_amount_minor then 'settlement_amount' else '' end") %}
    trim({{ dbt.concat(pieces) }}
    ) as mismatched_fields
  from compared
)

select
  checked.*,
  mismatched_field_count = 0 as is_reconciled,
  cast({{ dbt.date_trunc('month', 'payout_date') }} as {{ dbt.type_timestamp() }}) as payout_month,
  {{ klarna_to_major_units('totals_settlement_amount_minor', 'currency_code') }} as settlement_amount,
  {{ klarna_to_major_units('transactions_settlement_amount_minor', 'currency_code') }} as transactions_settlement_amount,
  {{ klarna_to_major_units('settlement_difference_minor', 'currency_code') }} as settlement_difference,
  {{ klarna_to_major_units('totals_sale_amount_minor', 'currency_code') }} as sale_amount,
  {{ klarna_to_major_units('totals_fee_amount_minor', 'currency_code') }} as fee_amount,
  {{ klarna_to_major_units('totals_return_amount_minor', 'currency_code') }} as return_amount,
  {#- What reaches the merchant's bank account for this payout: the settlement amount (negative:
      the merchant owes Klarna that much, Klarna's totals.deposit_amount). Match it to the bank line. #}
  totals_settlement_amount_minor as bank_deposit_amount_minor,
  {{ klarna_to_major_units('totals_settlement_amount_minor', 'currency_code') }} as bank_deposit_amount
from checked
