"""POST /api/webhooks/stripe: Stripe subscription events (TRIAL / TEAM / AGENCY billing).

Billing keeps flowing during maintenance: no maintenance gate in `before`."""

from lib.http import Endpoint
from lib.routes import stripe


class handler(Endpoint):
    route = "/api/webhooks/stripe"

    def post(self, request):
        return stripe.stripe(request)
