"""The ceiling: a Starlette endpoint that does what the API's receipt route does
minus the work — read the body, answer the contract's JSON — served the same way."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def receipt(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"message": "DLR received"})


app = Starlette(routes=[
    Route("/webhooks/jasmin/{id:int}/dlr", receipt, methods=["POST", "GET"]),
    Route("/api/sms-gateways/{id:int}/dlr", receipt, methods=["POST", "GET"]),
])
