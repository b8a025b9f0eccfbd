"""The web part as a server: the Flask app under waitress, a production WSGI server.

waitress (pure Python, a thread pool, no fork) because the web part shares a process with the
SCP and the worker in ``aomas serve``, and runs alone under systemd in ``aomas web``.
"""

from __future__ import annotations

import logging
import threading

from waitress.server import create_server

from appliance.services import Appliance
from ui.app import create_app

log = logging.getLogger(__name__)


class WebServer:
    def __init__(self, appliance: Appliance):
        config = appliance.config
        app = create_app(appliance)
        # Proxy headers are believed from web.trusted_proxy only (the nginx that terminates
        # HTTPS): the rate limit, the audit log and the address allow-lists use the client's
        # address, which only that proxy may state. From anyone else they are removed.
        proxy = {"trusted_proxy": config.web.trusted_proxy, "trusted_proxy_count": 1,
                 "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"}
                 } if config.web.trusted_proxy else {}
        self.server = create_server(app, host=config.web.bind, port=config.web.port,
                                    threads=config.web.threads, ident="AOMAS",
                                    clear_untrusted_proxy_headers=True, **proxy,
                                    # waitress's own cap (1 GiB by default) must not undercut
                                    # the upload route's (ui.security)
                                    max_request_body_size=config.web.max_upload_mb * 2**20)
        self.thread = threading.Thread(target=self.server.run, name="aomas-web", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("web on http://%s:%d", *self.server.socket.getsockname()[:2])

    def stop(self) -> None:
        self.server.close()
        self.server.task_dispatcher.shutdown(timeout=5)
