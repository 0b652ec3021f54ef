import pytest, trio, trio_websocket, httpx, time

@pytest.mark.trio
async def test_smoke(daemon):
    ev = await trio.to_thread.run_sync(lambda: daemon.publish("a", title="x"))
    print(ev)
    tok = await trio.to_thread.run_sync(lambda: daemon.user("bob", grants={"a": "read"}))
    async with trio_websocket.open_websocket_url(daemon.url.replace("http", "ws") + "/v1/stream?since=all&token=" + tok) as ws:
        msg = await ws.get_message()
        print(msg)
