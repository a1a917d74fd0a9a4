{% set fields = ['sale', 'fee', 'return', 'reversal', 'commission', 'tax', 'holdback', 'release', 'repay',
                 'fee_correction', 'settlement'] %}

with latest as (
  {% call klarna_latest_rows('payout_summaries', ['currency_code', 'summary_month']) %}
    upper(cast(summary_settlement_currency as {{ dbt.type_string() }})) as currency_code,
    cast(summary_month as {{ dbt.type_timestamp() }}) as summary_month,
    cast(summary_payout_date_start as {{ dbt.type_timestamp() }}) as payout_date_start,
    cast(summary_payout_date_end as {{ dbt.type_timestamp() }}) as payout_date_end,
    {%- for f in fields %}
    coalesce(cast(summary_total_{{ f }}_amount as {{ dbt.type_bigint() }}), 0) as total_{{ f }}_amount_minor{% if not loop.last %},{% endif %}
    {%- endfor %}
  {% endcall %}
)

select
  {{ dbt.concat(['source_relation', "'|'", 'currency_code', "'|'", 'cast(summary_month as ' ~ dbt.type_string() ~ ')']) }} as payout_summary_key,
  latest.*,
  {%- for f in fields %}
  {{ klarna_to_major_units('total_' ~ f ~ '_amount_minor', 'currency_code') }} as total_{{ f }}_amount{% if not loop.last %},{% endif %}
  {%- endfor %}
from latest
