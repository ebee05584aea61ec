"""POST /api/webhooks/stripe: Stripe subscription events. Not implemented yet."""

from lib.http import Endpoint, not_implemented


class handler(Endpoint):
    route = "/api/webhooks/stripe"
    post = not_implemented
