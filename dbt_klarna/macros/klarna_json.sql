{#- A scalar field of a JSON object column, as a string. Airbyte destinations land nested objects
    (the payout `totals`) as JSON (DuckDB, BigQuery), VARIANT/OBJECT (Snowflake) or jsonb (Postgres). -#}

{% macro klarna_json_field(column, field) -%}
  {{ return(adapter.dispatch('klarna_json_field', 'klarna')(column, field)) }}
{%- endmacro %}

{% macro default__klarna_json_field(column, field) -%}
  (cast({{ column }} as jsonb) ->> '{{ field }}')
{%- endmacro %}

{% macro duckdb__klarna_json_field(column, field) -%}
  json_extract_string({{ column }}, '$.{{ field }}')
{%- endmacro %}

{% macro bigquery__klarna_json_field(column, field) -%}
  json_value({{ column }}, '$.{{ field }}')
{%- endmacro %}

{% macro snowflake__klarna_json_field(column, field) -%}
  cast(get_path({{ column }}, '{{ field }}') as {{ dbt.type_string() }})
{%- endmacro %}

{% macro redshift__klarna_json_field(column, field) -%}
  json_extract_path_text(json_serialize({{ column }}), '{{ field }}')
{%- endmacro %}

{# A JSON field holding an integer amount in minor units; absent or null -> 0. #}
{% macro klarna_json_minor_units(column, field) -%}
  coalesce({{ dbt.safe_cast(klarna_json_field(column, field), dbt.type_bigint()) }}, 0)
{%- endmacro %}
