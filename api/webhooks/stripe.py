"""POST /api/webhooks/stripe: Stripe subscription events (TRIAL / TEAM / AGENCY billing)."""

from lib.billing.webhook import receive_stripe_webhook
from lib.http import Endpoint


class handler(Endpoint):
    route = "/api/webhooks/stripe"
    maintenance_exempt = True  # billing keeps flowing during maintenance

    def post(self, request):
        return receive_stripe_webhook(request)
