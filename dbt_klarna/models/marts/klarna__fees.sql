{#- What Klarna charged: one row per store (source_relation), payout month, currency, transaction type and detailed type of
    the fee-like transactions in payouts. Charged types (FEE, COMMISSION, TAX, CHARGE) count +,
    given back (FEE_REFUND, CORRECTION) count -; net_fee_amount is what Klarna kept. fee_rate is
    net fees over the sales (SALE) of the same month and currency. -#}
{% set charged = klarna_fee_types_charged() %}
{% set refunded = klarna_fee_types_refunded() %}

with transactions as (
  select
    transactions.source_relation,
    cast({{ dbt.date_trunc('month', 'coalesce(transactions.payout_date, payouts.payout_date)') }} as {{ dbt.type_timestamp() }}) as fee_month,
    coalesce(transactions.currency_code, payouts.currency_code) as currency_code,
    transactions.transaction_type,
    transactions.detailed_type,
    transactions.amount_minor
  from {{ ref('stg_klarna__transactions') }} as transactions
  left join {{ ref('stg_klarna__payouts') }} as payouts
    on payouts.source_relation = transactions.source_relation
    and payouts.payment_reference = transactions.payment_reference
),

sales as (
  select source_relation, fee_month, currency_code, cast(sum(amount_minor) as {{ dbt.type_bigint() }}) as month_sale_amount_minor
  from transactions
  where transaction_type = 'SALE'
  group by source_relation, fee_month, currency_code
),

fees as (
  select
    source_relation,
    fee_month,
    currency_code,
    transaction_type as fee_type,
    coalesce(detailed_type, transaction_type) as fee_detailed_type,
    count(*) as transaction_count,
    cast(sum(amount_minor) as {{ dbt.type_bigint() }}) as gross_amount_minor,
    cast(sum(case when transaction_type in {{ klarna_in_list(refunded) }} then -amount_minor else amount_minor end) as {{ dbt.type_bigint() }}) as net_fee_amount_minor
  from transactions
  where transaction_type in {{ klarna_in_list(charged + refunded) }}
  group by source_relation, fee_month, currency_code, transaction_type, coalesce(detailed_type, transaction_type)
)

select
  {{ dbt.concat(['fees.source_relation', "'|'", 'fees.currency_code', "'|'", 'cast(fees.fee_month as ' ~ dbt.type_string() ~ ')', "'|'", 'fees.fee_type', "'|'", 'fees.fee_detailed_type']) }} as fee_key,
  fees.source_relation,
  fees.fee_month,
  fees.currency_code,
  fees.fee_type,
  fees.fee_detailed_type,
  fees.fee_type in {{ klarna_in_list(refunded) }} as is_refund,
  fees.transaction_count,
  fees.gross_amount_minor,
  fees.net_fee_amount_minor,
  coalesce(sales.month_sale_amount_minor, 0) as month_sale_amount_minor,
  {{ klarna_to_major_units('fees.gross_amount_minor', 'fees.currency_code') }} as gross_amount,
  {{ klarna_to_major_units('fees.net_fee_amount_minor', 'fees.currency_code') }} as net_fee_amount,
  {{ klarna_to_major_units('coalesce(sales.month_sale_amount_minor, 0)', 'fees.currency_code') }} as month_sale_amount,
  cast(fees.net_fee_amount_minor as {{ dbt.type_numeric() }})
    / nullif(cast(sales.month_sale_amount_minor as {{ dbt.type_numeric() }}), 0) as fee_rate
from fees
left join sales
  on sales.source_relation = fees.source_relation
  and sales.fee_month = fees.fee_month
  and sales.currency_code = fees.currency_code
