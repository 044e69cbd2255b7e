"""The HTTP exchange spawned for a run lets in only who holds its token."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest
from academy.exchange import HttpExchangeFactory

from actors.client.exchange import free_port
from actors.client.exchange import spawned_http_exchange

pytestmark = pytest.mark.timeout(60)


def test_the_spawned_exchange_refuses_requests_without_its_token():
    port = free_port()
    with spawned_http_exchange('127.0.0.1', port, timeout=30) as factory:
        url = f'http://127.0.0.1:{port}/discover?agent=Director'
        for headers in ({}, {'Authorization': 'Bearer not-the-token'}):
            # Another user of the host, who can reach 127.0.0.1 but has no token.
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
            assert refused.value.code == 401

        async def stranger_joins() -> None:
            client = await HttpExchangeFactory(f'http://127.0.0.1:{port}').create_user_client(
                start_listener=False
            )
            await client.close()

        with pytest.raises(Exception) as stranger:
            asyncio.run(stranger_joins())
        assert '401' in str(stranger.value) or 'Unauthorized' in type(stranger.value).__name__

        async def owner_joins() -> str:
            client = await factory.create_user_client(start_listener=False)
            try:
                return str(client.client_id)
            finally:
                await client.close()

        assert asyncio.run(owner_joins())  # the run's own factory carries the token
