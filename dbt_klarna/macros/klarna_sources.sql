{#- Where source-klarna's tables are, and the latest version of each row in them.

    One Airbyte connection (or PyAirbyte cache schema) per store: Klarna and Kustom issue API credentials
    per store (merchant id), so a merchant with a store per country syncs each into a schema of its own.
    `klarna_schemas` lists them (default: [klarna_schema]); every staging model unions them, with
    `source_relation` naming the schema each row came from. Every listed schema must hold the tables
    of the streams the package reads, written by the same connector version (the same columns). -#}

{% macro klarna_schemas() -%}
  {{ return(var('klarna_schemas', none) or [var('klarna_schema', 'klarna')]) }}
{%- endmacro %}

{#- The stream's table of one store: src_klarna.yml's source table (its database and identifier), in `schema`. -#}
{% macro klarna_relation(stream, schema) -%}
  {{ return(source('klarna', stream).incorporate(path={'schema': schema})) }}
{%- endmacro %}

{#- A column whose name the warehouse reserves (the disputes' `order`), quoted as the destination wrote it:
    Airbyte's Snowflake destination writes identifiers in upper case. -#}
{% macro klarna_quoted(name) -%}
  {{ return(adapter.dispatch('klarna_quoted', 'klarna')(name)) }}
{%- endmacro %}

{% macro default__klarna_quoted(name) -%}
  {{ adapter.quote(name) }}
{%- endmacro %}

{% macro snowflake__klarna_quoted(name) -%}
  {{ adapter.quote(name | upper) }}
{%- endmacro %}

{#- The latest version of each row of `stream` across the stores, keyed by source_relation and
    `key_columns`: whatever the load mode, one row per key. Airbyte's append and incremental append
    (and PyAirbyte's append) keep every version; the one with the latest _airbyte_extracted_at wins
    (then the larger _airbyte_raw_id). The caller block is the typed select list of one store's table
    (its output names are what `key_columns` name); source_relation, _airbyte_raw_id and
    _airbyte_extracted_at are added. -#}
{% macro klarna_latest_rows(stream, key_columns) -%}
  {%- set typed_rows %}
    {%- for schema in klarna_schemas() %}
    select
      cast('{{ schema }}' as {{ dbt.type_string() }}) as source_relation,
      {{ caller() }},
      cast(_airbyte_raw_id as {{ dbt.type_string() }}) as _airbyte_raw_id,
      cast(_airbyte_extracted_at as {{ dbt.type_timestamp() }}) as _airbyte_extracted_at
    from {{ klarna_relation(stream, schema) }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
  {%- endset %}
  select typed.*
  from ({{ typed_rows }}) as typed
  inner join (
    select
      source_relation as kept_source_relation,
      _airbyte_raw_id as kept_raw_id,
      row_number() over (
        partition by source_relation, {{ key_columns | join(', ') }}
        order by _airbyte_extracted_at desc, _airbyte_raw_id desc
      ) as version_rank
    from ({{ typed_rows }}) as versions
  ) as newest
    on newest.kept_source_relation = typed.source_relation
    and newest.kept_raw_id = typed._airbyte_raw_id
    and newest.version_rank = 1
{%- endmacro %}
