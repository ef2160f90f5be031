import base64
import json
import os

from google.cloud import pubsub_v1, storage, vision
from google.cloud import translate_v2 as translate

vision_client = vision.ImageAnnotatorClient()
translate_client = translate.Client()
publisher = pubsub_v1.PublisherClient()
storage_client = storage.Client()
project_id = os.environ["GCP_PROJECT"]


def detect_text(bucket, filename):
    """Extracts the text of an uploaded image and asks for its translation."""
    image = vision.Image(source=vision.ImageSource(gcs_image_uri=f"gs://{bucket}/{filename}"))
    annotations = vision_client.text_detection(image=image).text_annotations
    text = annotations[0].description if annotations else ""
    detected = translate_client.detect_language(text)
    for lang in os.environ.get("TO_LANG", "en").split(","):
        message = {"text": text, "filename": filename, "lang": lang, "src_lang": detected}
        topic = publisher.topic_path(project_id, os.environ["TRANSLATE_TOPIC"])
        publisher.publish(topic, data=json.dumps(message).encode("utf-8"))


def process_image(file, context):
    """Cloud Storage trigger: a new image was uploaded."""
    detect_text(file["bucket"], file["name"])


def translate_text(event, context):
    """Pub/Sub trigger: translates one message's text."""
    message = json.loads(base64.b64decode(event["data"]).decode("utf-8"))
    result = translate_client.translate(message["text"], target_language=message["lang"])
    blob = storage_client.bucket(os.environ["RESULT_BUCKET"]).blob(message["filename"])
    blob.upload_from_string(result["translatedText"])
