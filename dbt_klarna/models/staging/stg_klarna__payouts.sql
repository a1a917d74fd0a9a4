with latest as (
  {% call klarna_latest_rows('payouts', ['payment_reference']) %}
    cast(payment_reference as {{ dbt.type_string() }}) as payment_reference,
    cast(payout_date as {{ dbt.type_timestamp() }}) as payout_date,
    upper(cast(currency_code as {{ dbt.type_string() }})) as currency_code,
    upper(cast(currency_code_of_registration_country as {{ dbt.type_string() }})) as currency_code_of_registration_country,
    cast(merchant_id as {{ dbt.type_string() }}) as merchant_id,
    cast(merchant_settlement_type as {{ dbt.type_string() }}) as merchant_settlement_type,
    {%- for field in klarna_all_total_fields() %}
    {{ klarna_json_minor_units('totals', field) }} as {{ field }}_minor{% if not loop.last %},{% endif %}
    {%- endfor %}
  {% endcall %}
)

select
  latest.*,
  {{ klarna_currency_exponent('currency_code') }} as currency_exponent,
  {%- for field in klarna_all_total_fields() %}
  {{ klarna_to_major_units(field ~ '_minor', 'currency_code') }} as {{ field }}{% if not loop.last %},{% endif %}
  {%- endfor %}
from latest
