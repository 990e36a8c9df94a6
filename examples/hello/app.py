"""kubespin example: a greeting that counts visitors in the app's key-value store.

GET /            -> "Hello, world! You are visitor #N" (N kept in the `default` key-value store)
GET /hello/:name -> greets :name with the `greeting` variable (set it with --variable greeting=Hi)
"""

from spin_sdk import http, key_value, variables
from spin_sdk.http import Request, Response


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        name = request.headers.get("spin-path-match-name") or "world"
        greeting = variables.get("greeting")
        with key_value.open_default() as store:
            count = int((store.get("visits") or b"0").decode()) + 1
            store.set("visits", str(count).encode())
        body = f"{greeting}, {name}! You are visitor #{count}.\n"
        return Response(200, {"content-type": "text/plain"}, body.encode())
