"""codex-trio: a Trio-native Codex app-server.

The public surface: run the server in-process (`open_app_server`), serve it from a nursery
(`serve`), and the one error type handlers raise (`RpcError`).
"""

from codex_trio._version import VERSION
from codex_trio.protocol.errors import RpcError
from codex_trio.server import AppServer, open_app_server, serve
from codex_trio.settings import ServerSettings

__version__ = VERSION

__all__ = ["AppServer", "RpcError", "ServerSettings", "__version__", "open_app_server", "serve"]
