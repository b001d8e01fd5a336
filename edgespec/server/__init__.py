"""An OpenAI-compatible HTTP server over one loaded pair (``pip install edgespec[server]``).

>>> app = create_app(pair, ServerConfig(model_id="qwen-coder"))
>>> run(app, bind("127.0.0.1", 8080))
"""

from __future__ import annotations

from edgespec.server.app import ServerConfig, create_app
from edgespec.server.serving import Running, bind, run, start_in_thread, url_of

__all__ = ["Running", "ServerConfig", "bind", "create_app", "run", "start_in_thread", "url_of"]
