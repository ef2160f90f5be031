import os
import tempfile

from google.cloud import storage, vision
from wand.image import Image

storage_client = storage.Client()
vision_client = vision.ImageAnnotatorClient()


def blur_offensive_images(data, context):
    """Blurs images that Vision's safe search flags."""
    blob = storage_client.bucket(data["bucket"]).get_blob(data["name"])
    image = vision.Image(source=vision.ImageSource(gcs_image_uri=f"gs://{data['bucket']}/{data['name']}"))
    detected = vision_client.safe_search_detection(image=image).safe_search_annotation
    if detected.adult == 5 or detected.violence == 5:
        __blur_image(blob)


def __blur_image(current_blob):
    _, temp_local_filename = tempfile.mkstemp()
    current_blob.download_to_filename(temp_local_filename)
    with Image(filename=temp_local_filename) as image:
        image.resize(*image.size, blur=16, filter="hamming")
        image.save(filename=temp_local_filename)
    bucket = storage_client.bucket(os.environ["BLURRED_BUCKET_NAME"])
    bucket.blob(current_blob.name).upload_from_filename(temp_local_filename)
    os.remove(temp_local_filename)
