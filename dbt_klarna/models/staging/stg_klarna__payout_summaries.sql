{% set fields = ['sale', 'fee', 'return', 'reversal', 'commission', 'tax', 'holdback', 'release', 'repay',
                 'fee_correction', 'settlement'] %}

with latest as (
  {{ klarna_latest_rows(source('klarna', 'payout_summaries'), ['summary_settlement_currency', 'summary_month']) }}
),

typed as (
  select
    upper(cast(summary_settlement_currency as {{ dbt.type_string() }})) as currency_code,
    cast(summary_month as {{ dbt.type_timestamp() }}) as summary_month,
    cast(summary_payout_date_start as {{ dbt.type_timestamp() }}) as payout_date_start,
    cast(summary_payout_date_end as {{ dbt.type_timestamp() }}) as payout_date_end,
    {%- for f in fields %}
    coalesce(cast(summary_total_{{ f }}_amount as {{ dbt.type_bigint() }}), 0) as total_{{ f }}_amount_minor,
    {%- endfor %}
    cast(_airbyte_raw_id as {{ dbt.type_string() }}) as _airbyte_raw_id,
    cast(_airbyte_extracted_at as {{ dbt.type_timestamp() }}) as _airbyte_extracted_at
  from latest
)

select
  {{ dbt.concat(['currency_code', "'|'", 'cast(summary_month as ' ~ dbt.type_string() ~ ')']) }} as payout_summary_key,
  typed.*,
  {%- for f in fields %}
  {{ klarna_to_major_units('total_' ~ f ~ '_amount_minor', 'currency_code') }} as total_{{ f }}_amount{% if not loop.last %},{% endif %}
  {%- endfor %}
from typed
