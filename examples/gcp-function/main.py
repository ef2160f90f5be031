"""Cloud Functions (2nd gen) source folder for phasegate's Pub/Sub-triggered completions.

Deploy from this folder (with your phasegate.toml beside this file):

    gcloud functions deploy phasegate-completions --gen2 --runtime=python312 \
        --region=europe-west1 --source=. --entry-point=record_completion \
        --trigger-topic=phasegate-completions --retry \
        --service-account=phasegate-fn@PROJECT.iam.gserviceaccount.com \
        --set-env-vars=PHASEGATE_CONFIG=phasegate.toml
"""

from phasegate.gcp.function import record_completion

__all__ = ["record_completion"]
