"""The service's routes, one module per area; each offers ``router(context) -> APIRouter``."""
