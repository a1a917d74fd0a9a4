{#- The transactions Klarna lists as not yet paid out NOW, per store, however the stream was loaded:

    1. only the rows of the stream's latest listing (the largest pending_as_of: every row of one sync carries
       that sync's start). A full refresh overwrite (Airbyte's, PyAirbyte's replace) holds only that listing
       anyway; append and merge (PyAirbyte's default, on transaction_key) also keep earlier listings' rows,
       among them rows Klarna no longer lists. Rows written before pending_as_of existed count as one
       listing older than any other.
    2. never a transaction that is now in a payout: a row is dropped when a transaction of
       stg_klarna__transactions with the same movement_key was extracted at or after that listing (paid out
       since; the n-th pending row of a movement needs n such transactions). This covers a sync that did not
       read pending_transactions, and a row Klarna paid out between the two reads of one sync.
    Limit: when the latest sync listed no pending row at all, the listing before it stands, less what was
    paid out since (a row Klarna dropped without paying it out would remain). -#}
{{ config(enabled=var('klarna__using_pending_transactions', true)) }}

with listed as (
  {% call klarna_latest_rows('pending_transactions', ['transaction_key', 'pending_as_of']) %}
    {{ klarna_transaction_columns(in_payout=false) }},
    coalesce(cast(pending_as_of as {{ dbt.type_timestamp() }}), cast('1970-01-01 00:00:00' as {{ dbt.type_timestamp() }})) as pending_as_of
  {% endcall %}
),

latest_listing as (
  select source_relation, max(pending_as_of) as pending_as_of
  from listed
  group by source_relation
),

current_rows as (
  select
    listed.*,
    row_number() over (partition by listed.source_relation, listed.movement_key order by listed.transaction_key) as movement_occurrence
  from listed
  inner join latest_listing
    on latest_listing.source_relation = listed.source_relation
    and latest_listing.pending_as_of = listed.pending_as_of
),

paid_since as (
  select paid.source_relation, paid.movement_key, count(*) as paid_count
  from {{ ref('stg_klarna__transactions') }} as paid
  inner join latest_listing
    on latest_listing.source_relation = paid.source_relation
    and paid._airbyte_extracted_at >= latest_listing.pending_as_of
  group by paid.source_relation, paid.movement_key
)

select
  current_rows.*,
  {{ klarna_transaction_major_units() }}
from current_rows
left join paid_since
  on paid_since.source_relation = current_rows.source_relation
  and paid_since.movement_key = current_rows.movement_key
where coalesce(paid_since.paid_count, 0) < current_rows.movement_occurrence
