{#- Generic tests for keys that include the store (source_relation): dbt's own `unique` and `relationships`
    take one column. -#}

{% test klarna_unique_key(model, columns) %}
select {{ columns | join(', ') }}, count(*) as rows_with_this_key
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}

{#- Every row's `column_name` (with its source_relation) names a row of `to`'s `field`; null passes. -#}
{% test klarna_belongs_to(model, column_name, to, field) %}
select child.source_relation, child.{{ column_name }}
from {{ model }} as child
left join {{ to }} as parent
  on parent.source_relation = child.source_relation
  and parent.{{ field }} = child.{{ column_name }}
where child.{{ column_name }} is not null
  and parent.{{ field }} is null
{% endtest %}
