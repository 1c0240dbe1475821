"""The moderator console: alerts live from `alerts` and older ones from `audit`, each with its
input and regeneration from the evidence store, decisions published to `labels`, and claims on
`claims` so two consoles never offer the same alert as undecided. ``state`` (pure),
``feed`` (Kafka), ``app`` (Starlette routes), ``guard`` (token, origin, headers), ``serve``
(uvicorn). Knows Kafka, Starlette and the evidence store; no torch.
"""
