import logging
from pathlib import Path

import yaml
from dateutil import parser as dateparser
from google.api_core import exceptions
from google.cloud import bigquery

from loader.schema import table_schema

CONFIG = yaml.safe_load((Path(__file__).parent / "config.yaml").read_text())
client = bigquery.Client()


def load_file(data, context):
    """Loads an uploaded CSV into the day's partition."""
    day = dateparser.isoparse(data["timeCreated"]).strftime("%Y%m%d")
    table = f"{CONFIG['dataset']}.{CONFIG['table']}${day}"
    job_config = bigquery.LoadJobConfig(schema=table_schema(), skip_leading_rows=1)
    try:
        client.load_table_from_uri(f"gs://{data['bucket']}/{data['name']}", table, job_config=job_config).result()
    except exceptions.BadRequest:
        logging.exception("load of %s failed", data["name"])
