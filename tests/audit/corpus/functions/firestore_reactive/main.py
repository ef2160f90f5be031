import functions_framework
from cloudevents.http import CloudEvent
from google.cloud import firestore
from google.events.cloud import firestore as firestoredata

client = firestore.Client()


@functions_framework.cloud_event
def make_upper_case(cloud_event: CloudEvent) -> None:
    """Upper-cases the ``original`` field of every new or changed document."""
    payload = firestoredata.DocumentEventData()
    payload._pb.ParseFromString(cloud_event.data)
    path_parts = payload.value.name.split("/")
    collection_path = path_parts[path_parts.index("documents") + 1]
    document_path = "/".join(path_parts[path_parts.index("documents") + 2 :])
    affected_doc = client.collection(collection_path).document(document_path)
    cur_value = payload.value.fields["original"].string_value
    new_value = cur_value.upper()
    if cur_value != new_value:
        affected_doc.set({"original": new_value, "at": firestore.SERVER_TIMESTAMP})
