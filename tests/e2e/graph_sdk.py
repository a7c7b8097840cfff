"""msgraph-sdk pointed at a wopihost server: a GraphServiceClient with an API token for that host only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def sdk_client(base: str, token: str):
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient

    host = urlsplit(base).hostname

    class Tokens(AccessTokenProvider):
        """The API token, for requests to this host only (kiota asks for each request's URL)."""

        def __init__(self):
            self.validator = AllowedHostsValidator([host])

        async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
            return token if self.validator.is_url_host_valid(uri) else ""

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return self.validator

    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(Tokens()))
    adapter.base_url = f"{base}/v1.0"
    return GraphServiceClient(request_adapter=adapter)
