{#- The latest version of each record: Airbyte's incremental append (and a destination without
    deduplication) keeps every version; the one with the latest `_airbyte_extracted_at` wins. -#}

{% macro klarna_latest_rows(relation, key_columns) -%}
  select *
  from (
    select
      src.*,
      row_number() over (
        partition by {{ key_columns | join(', ') }}
        order by _airbyte_extracted_at desc, _airbyte_raw_id desc
      ) as klarna_version_rank
    from {{ relation }} as src
  ) as versions
  where klarna_version_rank = 1
{%- endmacro %}
