"""Flask blueprints: Cal.com receiver, ICS busy feed, FHIR inbound, health, metrics.

The app that mounts them is built in calehr/web.py (the composition root)."""
