"""One error type for every answer that is not a success: HTTP status, a metrics kind, a message."""


class ApiError(Exception):
    def __init__(self, status, kind, message, headers=None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def body(self):
        return dict(error=self.kind, detail=self.message)
