{#- Fails with one row per mart figure that disagrees with the staging rows it is made of (model, key,
    figure, the mart's value, the value recomputed from staging): each payout's transactions, each order's
    paid-out, pending and captured money, each store's fees per currency, each dispute's settled money. The
    marts are tables built from staging in the same run; a row here means a mart that is stale or wrong. -#}
{% set using_pending = var('klarna__using_pending_transactions', true) %}
{% set using_disputes = var('klarna__using_disputes', true) %}

with transactions as (
  select * from {{ ref('stg_klarna__transactions') }}
),

payout_sums as (
  select source_relation, payment_reference, count(*) as transaction_count, sum(signed_amount_minor) as net_minor
  from transactions
  group by source_relation, payment_reference
),

order_sums as (
  select source_relation, order_id, sum(signed_amount_minor) as net_minor
  from transactions
  where order_id is not null
  group by source_relation, order_id
),

{%- if using_pending %}
pending_sums as (
  select source_relation, order_id, sum(signed_amount_minor) as net_minor
  from {{ ref('stg_klarna__pending_transactions') }}
  where order_id is not null
  group by source_relation, order_id
),
{%- endif %}

fee_sums as (
  select
    transactions.source_relation,
    coalesce(transactions.currency_code, payouts.currency_code) as currency_code,
    sum(case when transactions.transaction_type in {{ klarna_in_list(klarna_fee_types_charged()) }} then transactions.amount_minor
             when transactions.transaction_type in {{ klarna_in_list(klarna_fee_types_refunded()) }} then -transactions.amount_minor
             else 0 end) as net_minor
  from transactions
  left join {{ ref('stg_klarna__payouts') }} as payouts
    on payouts.source_relation = transactions.source_relation
    and payouts.payment_reference = transactions.payment_reference
  group by transactions.source_relation, coalesce(transactions.currency_code, payouts.currency_code)
),

mart_fees as (
  select source_relation, currency_code, sum(net_fee_amount_minor) as net_minor
  from {{ ref('klarna__fees') }}
  group by source_relation, currency_code
),

mismatches as (
  {%- for mart_column, sums_column in [('transactions_settlement_amount_minor', 'net_minor'), ('transaction_count', 'transaction_count')] %}
  select 'klarna__payout_reconciliation' as model, recon.source_relation, recon.payment_reference as row_key,
         '{{ mart_column }}' as figure, recon.{{ mart_column }} as mart_value, coalesce(sums.{{ sums_column }}, 0) as staging_value
  from {{ ref('klarna__payout_reconciliation') }} as recon
  left join payout_sums as sums on sums.source_relation = recon.source_relation and sums.payment_reference = recon.payment_reference
  union all
  {%- endfor %}
  select 'klarna__payout_reconciliation', payouts.source_relation, payouts.payment_reference, 'totals_settlement_amount_minor',
         recon.totals_settlement_amount_minor, payouts.settlement_amount_minor
  from {{ ref('stg_klarna__payouts') }} as payouts
  left join {{ ref('klarna__payout_reconciliation') }} as recon
    on recon.source_relation = payouts.source_relation and recon.payment_reference = payouts.payment_reference
  union all
  select 'klarna__order_settlement', settlement.source_relation, settlement.order_id, 'paid_out_net_amount_minor',
         settlement.paid_out_net_amount_minor, coalesce(sums.net_minor, 0)
  from {{ ref('klarna__order_settlement') }} as settlement
  left join order_sums as sums on sums.source_relation = settlement.source_relation and sums.order_id = settlement.order_id
  union all
  select 'klarna__order_settlement', orders.source_relation, orders.order_id, 'captured_amount_minor',
         settlement.captured_amount_minor, orders.captured_amount_minor
  from {{ ref('stg_klarna__orders') }} as orders
  left join {{ ref('klarna__order_settlement') }} as settlement
    on settlement.source_relation = orders.source_relation and settlement.order_id = orders.order_id
  {%- if using_pending %}
  union all
  select 'klarna__order_settlement', settlement.source_relation, settlement.order_id, 'pending_net_amount_minor',
         settlement.pending_net_amount_minor, coalesce(sums.net_minor, 0)
  from {{ ref('klarna__order_settlement') }} as settlement
  left join pending_sums as sums on sums.source_relation = settlement.source_relation and sums.order_id = settlement.order_id
  {%- endif %}
  union all
  select 'klarna__fees', fee_sums.source_relation, fee_sums.currency_code, 'net_fee_amount_minor',
         coalesce(mart_fees.net_minor, 0), fee_sums.net_minor
  from fee_sums
  left join mart_fees on mart_fees.source_relation = fee_sums.source_relation and mart_fees.currency_code = fee_sums.currency_code
  {%- if using_disputes %}
  union all
  select 'klarna__disputes', disputes.source_relation, disputes.dispute_krn, 'settled_net_amount_minor',
         disputes.settled_net_amount_minor, coalesce(sum(transactions.signed_amount_minor), 0)
  from {{ ref('klarna__disputes') }} as disputes
  left join transactions
    on transactions.source_relation = disputes.source_relation
    and {{ klarna_dispute_match_key('transactions.reversal_reference') }} = disputes.dispute_match_key
  group by disputes.source_relation, disputes.dispute_krn, disputes.settled_net_amount_minor
  {%- endif %}
)

select *
from mismatches
where mart_value is null and staging_value is not null
   or mart_value is not null and staging_value is null
   or mart_value <> staging_value
