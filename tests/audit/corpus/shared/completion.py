from google.cloud import firestore

from .names import run_key

db = firestore.Client()


def record(phase, processor, day):
    """Marks one processor of one phase complete for a day."""
    doc = db.collection("completions").document(run_key(phase, day))
    doc.set({processor: firestore.SERVER_TIMESTAMP}, merge=True)
