"""Serving Mini-Gemini: ``mgm chat`` (terminal), ``mgm serve`` (OpenAI-compatible HTTP API), ``mgm web`` (Gradio).

- ``common.py``   model / text-to-image options shared by the three commands
- ``chat.py``     the terminal chat
- ``engine.py``   the request queue that batches concurrent requests on one model instance
- ``server.py``   FastAPI app: /v1/chat/completions (+ SSE streaming), /v1/images/generations, /v1/models, /health
- ``web.py``      Gradio multimodal chat
"""
