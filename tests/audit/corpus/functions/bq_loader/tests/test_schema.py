from loader.schema import table_schema


def test_schema_has_two_columns():
    assert [field.name for field in table_schema()] == ["id", "value"]
