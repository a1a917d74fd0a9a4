{#- One row per dispute (Klarna's Disputes API v2), its latest state: disputes change until they close, and
    the stream re-reads them all on every sync. Amounts in minor units of the disputed amount's currency;
    dispute_match_key is the KRN lower-cased with '-' read as '_' (Klarna's examples write a reason both
    ways), how settlement transactions' reversal_reference find their dispute. -#}
{{ config(enabled=var('klarna__using_disputes', true)) }}

with latest as (
  {% call klarna_latest_rows('disputes', ['dispute_krn']) %}
    cast(dispute_krn as {{ dbt.type_string() }}) as dispute_krn,
    {{ klarna_json_field(klarna_quoted('order'), 'order_id') }} as order_id,
    cast(capture_id as {{ dbt.type_string() }}) as capture_id,
    cast(reason as {{ dbt.type_string() }}) as reason,
    cast(investigation_status as {{ dbt.type_string() }}) as investigation_status,
    cast(status as {{ dbt.type_string() }}) as status,
    cast(opened_at as {{ dbt.type_timestamp() }}) as opened_at,
    cast(closed_at as {{ dbt.type_timestamp() }}) as closed_at,
    cast(closing_reason as {{ dbt.type_string() }}) as closing_reason,
    cast(closing_reason_detailed as {{ dbt.type_string() }}) as closing_reason_detailed,
    cast(deadline_expires_at as {{ dbt.type_timestamp() }}) as deadline_expires_at,
    upper({{ klarna_json_field('disputed_amount', 'currency') }}) as currency_code,
    {{ klarna_json_minor_units('disputed_amount', 'amount') }} as disputed_amount_minor,
    {{ klarna_json_minor_units('charged_disputes_fee', 'amount') }} as charged_fee_minor,
    {{ klarna_json_minor_units('chargeback_amount', 'amount') }} as chargeback_amount_minor,
    cast(region as {{ dbt.type_string() }}) as region,
    {{ klarna_json_field('merchant', 'merchant_id') }} as merchant_id,
    {{ klarna_json_field(klarna_quoted('order'), 'merchant_reference1') }} as merchant_reference1,
    {{ klarna_json_field(klarna_quoted('order'), 'merchant_reference2') }} as merchant_reference2,
    {{ klarna_dispute_match_key('dispute_krn') }} as dispute_match_key
  {% endcall %}
)

select
  latest.*,
  {{ klarna_to_major_units('disputed_amount_minor', 'currency_code') }} as disputed_amount,
  {{ klarna_to_major_units('charged_fee_minor', 'currency_code') }} as charged_fee,
  {{ klarna_to_major_units('chargeback_amount_minor', 'currency_code') }} as chargeback_amount
from latest
