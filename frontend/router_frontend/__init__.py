"""The OpenAI-compatible HTTP front (router-openai) in front of the router."""
