"""Serving Mini-Gemini: ``mgm serve`` (OpenAI-compatible HTTP API), ``mgm chat`` (terminal), ``mgm web`` (Gradio).

- ``app.py``          the FastAPI app: routes, middleware, one error shape, the engine's lifespan, the schema
- ``routes.py``       the routes: /v1/chat/completions, /v1/images/generations, /v1/models, /health
- ``chat.py``         one chat completion: limits, decoding, queueing, the answer (whole or SSE), disconnects
- ``state.py``        what the routes share (``app.state.server``): model, processor, settings, engine
- ``schemas.py``      request models and the OpenAI-shaped error
- ``images.py``       a request's images: sources, bytes, header sizes, decoding
- ``limits.py``       what a request may cost (pixels, characters) and the memory figure the bounds add up to
- ``middleware.py``   request-body limits and the API key
- ``connections.py``  uvicorn's h11 protocol, subclassed: read deadlines, absolute-form targets, its own errors as JSON
- ``settings.py``     what an instance allows
- ``batching.py``     the queue that batches concurrent requests on one model instance
- ``terminal.py``     the terminal chat
- ``web.py``          Gradio multimodal chat
"""
