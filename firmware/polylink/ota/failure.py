"""How an OTA step fails (agent.py and runtime.py): OTAError with its OTA_UP reason code, and the
tries a download gets before it does."""

RETRIES = 5  # tries per download (a file, the runtime image) before the update fails


class OTAError(Exception):
    """An update that cannot go on; reason is the OTA_UP reason code (codes.REASON_*)."""

    def __init__(self, reason, text):
        super().__init__(text)
        self.reason = reason
        self.text = text
