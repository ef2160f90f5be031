from google.cloud import bigquery


def table_schema():
    """The destination table's columns."""
    return [bigquery.SchemaField("id", "STRING"), bigquery.SchemaField("value", "FLOAT")]
