"""POST /api/webhooks/stripe: Stripe subscription events (TRIAL / TEAM / AGENCY billing)."""

from lib.billing.webhook import receive_stripe_webhook
from lib.http import Endpoint


class handler(Endpoint):
    route = "/api/webhooks/stripe"

    def post(self, request):
        return receive_stripe_webhook(request)
