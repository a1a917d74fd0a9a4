{#- Money: Klarna sends integers in minor units of an ISO 4217 currency. -#}

{# The ISO 4217 minor-unit exponent of a currency code column: 2 unless listed. #}
{% macro klarna_currency_exponent(currency_column) -%}
  case
    when upper({{ currency_column }}) in ('BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX',
                                          'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF') then 0
    when upper({{ currency_column }}) in ('BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND') then 3
    when upper({{ currency_column }}) in ('CLF', 'UYW') then 4
    else 2
  end
{%- endmacro %}

{# Minor units -> major units, exact: a numeric times a numeric 1, 0.01, 0.001 or 0.0001 (no float
   division). The factor is cast too: BigQuery reads a literal such as 0.01 as FLOAT64, and NUMERIC
   times FLOAT64 is FLOAT64 there. #}
{% macro klarna_to_major_units(amount_column, currency_column) -%}
  cast(
    cast({{ amount_column }} as {{ dbt.type_numeric() }})
    * cast(case {{ klarna_currency_exponent(currency_column) }}
        when 0 then 1
        when 3 then 0.001
        when 4 then 0.0001
        else 0.01
      end as {{ dbt.type_numeric() }})
    as {{ dbt.type_numeric() }})
{%- endmacro %}
