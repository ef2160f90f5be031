import functions_framework
from markupsafe import escape


@functions_framework.http
def hello_http(request):
    """Responds to an HTTP request with a greeting."""
    request_json = request.get_json(silent=True)
    request_args = request.args
    if request_json and "name" in request_json:
        name = request_json["name"]
    elif request_args and "name" in request_args:
        name = request_args["name"]
    else:
        name = "World"
    return f"Hello {escape(name)}!"
