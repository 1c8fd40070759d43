"""The HTTP routes: the webhook endpoint, status queries and documents."""
