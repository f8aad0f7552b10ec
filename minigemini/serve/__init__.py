"""Serving Mini-Gemini: ``mgm serve`` (OpenAI-compatible HTTP API), ``mgm chat`` (terminal), ``mgm web`` (Gradio).

- ``app.py``          the FastAPI app: routes, middleware, one error shape, the engine's lifespan, the schema
- ``routes.py``       the routes: /v1/chat/completions, /v1/images/generations, /v1/models, /health
- ``chat.py``         one chat completion: limits, decoding into the library's chat turn, queueing, the answer
                      (whole or SSE), disconnects
- ``state.py``        what the routes share (``app.state.server``): model, processor, settings, engine
- ``protocol.py``     the OpenAI wire format: request, reply, stream-chunk and error models (pydantic)
- ``errors.py``       ``APIError``, the one error factory (whole replies, streams, middleware, the protocol)
- ``images.py``       a request's images: sources, bytes, header sizes, decoding
- ``limits.py``       what a request may cost (pixels, characters) and the memory figure the bounds add up to
- ``middleware.py``   request-body limits and the API key
- ``connections.py``  uvicorn's h11 protocol, subclassed: read deadlines, absolute-form targets, its own errors as JSON
- ``settings.py``     what an instance allows
- ``batching.py``     the queue that batches concurrent requests on one model instance
- ``terminal.py``     the terminal chat
- ``web.py``          Gradio multimodal chat
"""
