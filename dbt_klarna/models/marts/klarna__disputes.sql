{#- One row per dispute, per store: what was disputed and why, its state and outcome, how long the merchant
    has left to answer, the fee, and the settlement transactions that moved money for it (their
    reversal_reference names the dispute: DISPUTE_FEE charged, DISPUTE_FEE_REFUND given back, the REVERSAL of
    a lost dispute). outcome: open while Klarna investigates; lost when the merchant accepted the loss, let
    the deadline pass or was charged back; won when it closed otherwise. days_to_deadline: whole days from
    the build's date to deadline_expires_at, for open disputes (negative: overdue). -#}
{{ config(enabled=var('klarna__using_disputes', true)) }}

with disputes as (
  select * from {{ ref('stg_klarna__disputes') }}
),

moved as (
  select
    disputes.source_relation,
    disputes.dispute_krn,
    count(*) as settlement_transaction_count,
    cast(sum(case when transactions.transaction_type = 'FEE' then transactions.amount_minor
             when transactions.transaction_type = 'FEE_REFUND' then -transactions.amount_minor
             else 0 end) as {{ dbt.type_bigint() }}) as settled_fee_minor,
    cast(sum(case when transactions.transaction_type = 'REVERSAL' then transactions.amount_minor else 0 end) as {{ dbt.type_bigint() }}) as settled_reversal_minor,
    cast(sum(transactions.signed_amount_minor) as {{ dbt.type_bigint() }}) as settled_net_amount_minor,
    {{ dbt.listagg('distinct transactions.payment_reference', "', '", 'order by transactions.payment_reference') }} as payment_references
  from disputes
  inner join {{ ref('stg_klarna__transactions') }} as transactions
    on transactions.source_relation = disputes.source_relation
    and {{ klarna_dispute_match_key('transactions.reversal_reference') }} = disputes.dispute_match_key
  group by disputes.source_relation, disputes.dispute_krn
),

staged as (
  select
    disputes.*,
    disputes.investigation_status in ('opened', 'started', 'unresolved', 'replied') as is_open,
    orders.order_id is not null as has_order_details,
    orders.status as order_status,
    orders.captured_amount_minor as order_captured_amount_minor,
    coalesce(moved.settlement_transaction_count, 0) as settlement_transaction_count,
    coalesce(moved.settled_fee_minor, 0) as settled_fee_minor,
    coalesce(moved.settled_reversal_minor, 0) as settled_reversal_minor,
    coalesce(moved.settled_net_amount_minor, 0) as settled_net_amount_minor,
    moved.payment_references
  from disputes
  left join moved
    on moved.source_relation = disputes.source_relation
    and moved.dispute_krn = disputes.dispute_krn
  left join {{ ref('stg_klarna__orders') }} as orders
    on orders.source_relation = disputes.source_relation
    and orders.order_id = disputes.order_id
)

select
  staged.*,
  case
    when is_open then 'open'
    when investigation_status in ('loss_accepted', 'deadline_expired') or chargeback_amount_minor > 0 then 'lost'
    else 'won'
  end as outcome,
  case when is_open then {{ dbt.datediff(dbt.current_timestamp(), 'deadline_expires_at', 'day') }} end as days_to_deadline,
  {{ klarna_to_major_units('settled_fee_minor', 'currency_code') }} as settled_fee,
  {{ klarna_to_major_units('settled_reversal_minor', 'currency_code') }} as settled_reversal,
  {{ klarna_to_major_units('settled_net_amount_minor', 'currency_code') }} as settled_net_amount
from staged
