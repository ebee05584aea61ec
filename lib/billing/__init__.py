"""Subscription billing through Stripe webhooks: TRIAL, TEAM and AGENCY.

`webhook.receive_stripe_webhook` is the one entry point: `signature` verifies, `events` parses
the verified payload into plain values, `ledger` applies them to Postgres exactly once and
in order. Only `signature` touches the stripe SDK, and only when a webhook arrives.
"""
